"""Property tests: at the base shape every recipe is SP; Adam's LR·wd is width-independent."""

from hypothesis import assume, given, settings, strategies as st

from mupctl.plan import build_plan
from mupctl.recipe import load_recipe

QUANTITIES = ("init_std", "lr", "eps", "weight_decay", "optimizer", "name", "shape", "role")


def plan(recipe, opt, heads, head_dim, layers, width_mult=1, depth_mult=1, **model):
    d = heads * head_dim
    raw = {"model": {"d_model": d * width_mult, "n_heads": heads * width_mult, "n_layers": layers * depth_mult,
                     **model},
           "scaling": {"recipe": recipe, "base": {"d_model": d, "n_layers": layers}},
           "optimizer": {"name": opt, "weight_decay": 0.0 if opt == "adam" else 0.1}}
    return build_plan(load_recipe(raw=raw))


shapes = dict(heads=st.integers(1, 8), head_dim=st.sampled_from([8, 16, 64]), layers=st.integers(1, 6),
              tie=st.booleans(), act=st.sampled_from(["swiglu", "gelu"]))


@settings(max_examples=40, deadline=None)
@given(recipe=st.sampled_from(["mup", "depth_mup"]), opt=st.sampled_from(["adamw", "adam", "sgd", "muon"]),
       **shapes)
def test_base_shape_equals_standard_parameterization(recipe, opt, heads, head_dim, layers, tie, act):
    assume(not (recipe == "depth_mup" and opt == "sgd"))  # rejected at plan time (test_rules)
    kw = dict(tie_embeddings=tie, activation=act)
    mu = plan(recipe, opt, heads, head_dim, layers, **kw)
    sp = plan("none", opt, heads, head_dim, layers, **kw)
    assert [{k: t[k] for k in QUANTITIES} for t in mu["tensors"]] == \
           [{k: t[k] for k in QUANTITIES} for t in sp["tensors"]]
    assert mu["multipliers"] == sp["multipliers"]


@settings(max_examples=30, deadline=None)
@given(heads=st.integers(1, 4), head_dim=st.sampled_from([16, 32]), layers=st.integers(1, 4),
       width_mult=st.integers(1, 16), recipe=st.sampled_from(["mup", "depth_mup"]))
def test_adamw_lr_times_wd_is_width_independent(heads, head_dim, layers, width_mult, recipe):
    base = plan(recipe, "adamw", heads, head_dim, layers)
    wide = plan(recipe, "adamw", heads, head_dim, layers, width_mult=width_mult)
    for role in ("hidden", "hidden_out"):
        b = next(t for t in base["tensors"] if t["role"] == role)
        w = next(t for t in wide["tensors"] if t["role"] == role and t["name"] == b["name"])
        assert abs(w["lr"] * w["weight_decay"] - b["lr"] * b["weight_decay"]) <= 1e-15
        assert w["lr"] == b["lr"] / width_mult or abs(w["lr"] - b["lr"] / width_mult) < 1e-18


@settings(max_examples=30, deadline=None)
@given(layers=st.integers(1, 4), depth_mult=st.integers(1, 16), alpha=st.floats(0.5, 1.0),
       opt=st.sampled_from(["adamw", "muon"]))
def test_depth_mup_lr_times_wd_is_depth_independent(layers, depth_mult, alpha, opt):
    """Under any CompleteP α the in-branch LR moves as λ^(α-1) and LR·wd stays put."""
    def deep(mult):
        raw = {"model": {"d_model": 64, "n_heads": 2, "n_layers": layers * mult},
               "scaling": {"recipe": "depth_mup", "base": {"d_model": 64, "n_layers": layers},
                           "depth_alpha": alpha},
               "optimizer": {"name": opt, "weight_decay": 0.1, "muon": {"weight_decay": 0.1}}}
        return next(t for t in build_plan(load_recipe(raw=raw))["tensors"] if t["role"] == "hidden")
    b, d = deep(1), deep(depth_mult)
    assert abs(d["lr"] * d["weight_decay"] - b["lr"] * b["weight_decay"]) <= 1e-12 * b["lr"] * b["weight_decay"]
    assert abs(d["lr"] - b["lr"] * depth_mult ** (alpha - 1)) <= 1e-12 * b["lr"]
