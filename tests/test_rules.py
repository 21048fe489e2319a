"""Golden tests of the rule tables at m = 4, λ = 4, every value computed by hand from DESIGN.md."""

import math

import pytest

from mupctl.errors import UserError
from mupctl.plan import build_plan
from mupctl.recipe import load_recipe

SIGMA, ETA, EPS, WD, MUON_LR = 0.02, 1e-3, 1e-8, 0.1, 0.02
M, LAM, L, L_BASE = 4.0, 4.0, 8, 2


def plan_for(recipe, opt, **extra):
    raw = {
        "model": {"d_model": 256, "n_layers": L, "n_heads": 4, "init_std": SIGMA},
        "scaling": {"recipe": recipe, "base": {"d_model": 64, "n_layers": L_BASE}},
        "optimizer": {"name": opt, "lr": ETA, "eps": EPS, "weight_decay": 0.0 if opt == "adam" else WD,
                      "muon": {"lr": MUON_LR, "weight_decay": WD}},
    }
    for k, v in extra.items():
        raw[k] = {**raw.get(k, {}), **v}
    return build_plan(load_recipe(raw=raw))


def by_name(plan, name):
    return next(t for t in plan["tensors"] if t["name"] == name)


def expected_adam(recipe, wd=WD):
    """Hand-written TP5 Table 8 (+ CompleteP for depth_mup) values per tensor."""
    mup = recipe != "none"
    m = M if mup else 1.0
    d = LAM if recipe == "depth_mup" else 1.0  # depth factor for in-branch eps
    out_init = SIGMA / math.sqrt(2 * L_BASE * M) if recipe == "depth_mup" else (
        SIGMA / math.sqrt(2 * L * M) if mup else SIGMA / math.sqrt(2 * L))
    return {
        "tok_emb.weight": dict(init_std=SIGMA, lr=ETA, eps=EPS / m, weight_decay=wd),
        "blocks.0.attn.qkv.weight": dict(init_std=SIGMA / math.sqrt(m), lr=ETA / m, eps=EPS / (m * d),
                                         weight_decay=wd * m),
        "blocks.3.mlp.down.weight": dict(init_std=out_init, lr=ETA / m, eps=EPS / (m * d), weight_decay=wd * m),
        "blocks.0.attn_norm.weight": dict(init_std=0.0, lr=ETA, eps=EPS / (m * d), weight_decay=0.0),
        "norm_f.weight": dict(init_std=0.0, lr=ETA, eps=EPS / m, weight_decay=0.0),
        "lm_head.weight": dict(init_std=SIGMA, lr=ETA, eps=EPS / m, weight_decay=wd),
    }


@pytest.mark.parametrize("recipe", ["none", "mup", "depth_mup"])
@pytest.mark.parametrize("opt", ["adamw", "adam"])
def test_adam_family_golden(recipe, opt):
    plan = plan_for(recipe, opt)
    wd = 0.0 if opt == "adam" else WD
    for name, want in expected_adam(recipe, wd).items():
        got = by_name(plan, name)
        assert got["optimizer"] == opt
        for q, v in want.items():
            assert got[q] == pytest.approx(v, rel=1e-12), (name, q)
    mult = plan["multipliers"]
    assert mult["output_logits"] == pytest.approx(1 / M if recipe != "none" else 1.0)
    assert mult["residual_branch"] == pytest.approx(1 / LAM if recipe == "depth_mup" else 1.0)
    assert mult["attention_scale"] == pytest.approx(1 / math.sqrt(64))  # d_head = base d_head = 64
    assert plan["width_mult"] == M and plan["depth_mult"] == LAM


@pytest.mark.parametrize("recipe", ["none", "mup"])
def test_sgd_golden(recipe):
    plan = plan_for(recipe, "sgd")
    m = M if recipe == "mup" else 1.0
    # MuSGD: vector-like (one width dim) LR x m, wd / m; matrices fan_out/fan_in = 1.
    assert by_name(plan, "tok_emb.weight")["lr"] == pytest.approx(ETA * m)
    assert by_name(plan, "tok_emb.weight")["weight_decay"] == pytest.approx(WD / m)
    assert by_name(plan, "lm_head.weight")["lr"] == pytest.approx(ETA * m)
    assert by_name(plan, "norm_f.weight")["lr"] == pytest.approx(ETA * m)
    assert by_name(plan, "blocks.1.attn.qkv.weight")["lr"] == pytest.approx(ETA)
    assert by_name(plan, "blocks.1.attn.qkv.weight")["weight_decay"] == pytest.approx(WD)
    assert by_name(plan, "blocks.1.attn.qkv.weight")["init_std"] == pytest.approx(SIGMA / math.sqrt(m))
    assert all(t["eps"] is None for t in plan["tensors"])


@pytest.mark.parametrize("recipe", ["none", "mup", "depth_mup"])
@pytest.mark.parametrize("mode", ["original", "match_rms_adamw"])
def test_muon_golden(recipe, mode):
    plan = plan_for(recipe, "muon", optimizer={"muon": {"lr": MUON_LR, "weight_decay": WD, "adjust_lr_fn": mode}})
    m = M if recipe != "none" else 1.0
    qkv = by_name(plan, "blocks.2.attn.qkv.weight")
    assert qkv["optimizer"] == "muon" and qkv["eps"] is None
    # Spectral condition (docs/scaling.md corrects DESIGN.md's eta/m for match_rms_adamw): "original"
    # already supplies sqrt(fan_out/fan_in), so no width factor;
    # match_rms_adamw's full-rank update has spectral norm 0.2*lr*sqrt(max(A, B)) ~ lr*sqrt(m): eta/sqrt(m).
    lr_mult = 1.0 if mode == "original" else 1 / math.sqrt(m)
    assert qkv["lr"] == pytest.approx(MUON_LR * lr_mult)
    assert qkv["weight_decay"] == pytest.approx(WD / lr_mult)
    assert qkv["init_std"] == pytest.approx(SIGMA / math.sqrt(m))
    emb = by_name(plan, "tok_emb.weight")
    assert emb["optimizer"] == "adamw" and emb["lr"] == pytest.approx(ETA) and emb["eps"] == pytest.approx(EPS / m)
    # depth_mup: Muon's update ignores the 1/λ that the branch multiplier puts on the gradient, so its
    # LR and wd get λ⁰ (like Adam's LR); in-branch AdamW tensors keep Adam's depth rule (eps/(m·λ)).
    down, norm = by_name(plan, "blocks.3.mlp.down.weight"), by_name(plan, "blocks.0.attn_norm.weight")
    assert down["optimizer"] == "muon" and down["lr"] == pytest.approx(qkv["lr"])
    assert down["weight_decay"] == pytest.approx(qkv["weight_decay"])
    d = LAM if recipe == "depth_mup" else 1.0
    layers = L_BASE if recipe == "depth_mup" else L
    assert down["init_std"] == pytest.approx(SIGMA / math.sqrt(2 * layers * m))
    assert norm["optimizer"] == "adamw" and norm["lr"] == pytest.approx(ETA)
    assert norm["eps"] == pytest.approx(EPS / (m * d))
    assert plan["multipliers"]["residual_branch"] == pytest.approx(1 / d)


@pytest.mark.parametrize("opt", ["adamw", "muon"])
def test_depth_alpha_half_golden(opt):
    """CompleteP at α = ½ (Yang et al.'s Depth-μP): branch ×λ^-½, in-branch LR ×λ^-½, wd ×λ^½,
    Adam eps ×λ^-½; everything outside the branches and every init as at α = 1."""
    plan = plan_for("depth_mup", opt, scaling={"depth_alpha": 0.5})
    r = math.sqrt(LAM)  # λ^½ = 2
    assert plan["depth_alpha"] == 0.5
    assert plan["multipliers"]["residual_branch"] == pytest.approx(1 / r)
    assert plan["multiplier_exponents"]["residual_branch"]["lambda"] == -0.5
    qkv, down = by_name(plan, "blocks.0.attn.qkv.weight"), by_name(plan, "blocks.3.mlp.down.weight")
    if opt == "adamw":
        assert qkv["lr"] == pytest.approx(ETA / (M * r)) and qkv["eps"] == pytest.approx(EPS / (M * r))
        assert qkv["weight_decay"] == pytest.approx(WD * M * r)
    else:
        assert qkv["lr"] == pytest.approx(MUON_LR / r) and qkv["weight_decay"] == pytest.approx(WD * r)
    assert down["lr"] == pytest.approx(qkv["lr"]) and down["init_std"] == pytest.approx(SIGMA / math.sqrt(2 * L_BASE * M))
    norm = by_name(plan, "blocks.0.attn_norm.weight")
    assert norm["lr"] == pytest.approx(ETA / r) and norm["eps"] == pytest.approx(EPS / (M * r))
    assert by_name(plan, "norm_f.weight")["lr"] == pytest.approx(ETA)
    assert by_name(plan, "tok_emb.weight")["eps"] == pytest.approx(EPS / M)
    assert plan_for("depth_mup", opt)["depth_alpha"] == 1.0 and plan_for("mup", opt)["depth_alpha"] is None


def test_depth_alpha_needs_depth_mup():
    with pytest.raises(UserError, match="only depth_mup scales depth") as err:
        plan_for("mup", "adamw", scaling={"depth_alpha": 0.5})
    assert err.value.field == "scaling.depth_alpha"


def test_depth_mup_rejects_sgd():
    with pytest.raises(UserError, match="optimizer.name"):
        plan_for("depth_mup", "sgd")


def test_tied_embedding_keeps_embedding_rule():
    plan = plan_for("mup", "adamw", model={"tie_embeddings": True})
    names = [t["name"] for t in plan["tensors"]]
    assert "lm_head.weight" not in names
    emb = by_name(plan, "tok_emb.weight")
    assert emb["init_std"] == SIGMA and emb["lr"] == ETA  # never rescaled by sqrt(m) (microsoft/mup #55)
    assert plan["multipliers"]["output_logits"] == pytest.approx(1 / M)


def test_attention_scale_follows_head_size():
    # base d_head 32 but model d_head 64: muP uses alpha_attn/d_head with alpha_attn = sqrt(32).
    plan = plan_for("mup", "adamw", scaling={"base": {"d_model": 64, "n_layers": 2, "d_head": 32}})
    assert plan["multipliers"]["attention_scale"] == pytest.approx(math.sqrt(32) / 64)
    sp = plan_for("none", "adamw", scaling={"base": {"d_model": 64, "n_layers": 2, "d_head": 32}})
    assert sp["multipliers"]["attention_scale"] == pytest.approx(1 / math.sqrt(64))


def test_zero_inits_are_in_the_plan():
    plan = plan_for("mup", "adamw", scaling={"readout_zero_init": True, "zero_init_query": True})
    assert by_name(plan, "lm_head.weight")["init_std"] == 0.0
    assert by_name(plan, "blocks.0.attn.qkv.weight")["zero_rows"] == 256


@pytest.mark.parametrize("recipe", ["none", "mup", "depth_mup"])
def test_default_sigma_is_fan_in(recipe):
    """Unset model.init_std: σ = 1/√(base d_model) carried by μP (σ/√m), so the hidden matrices start at
    1/√d_model; SP has no base, so its σ is 1/√d_model of the model itself whatever scaling.base says."""
    plan = plan_for(recipe, "adamw", model={"init_std": None})
    base_sigma = 1 / math.sqrt(256 if recipe == "none" else 64)
    assert by_name(plan, "tok_emb.weight")["init_std"] == pytest.approx(base_sigma)
    assert by_name(plan, "blocks.0.attn.qkv.weight")["init_std"] == pytest.approx(1 / math.sqrt(256))
    at_base = plan_for(recipe, "adamw", model={"init_std": None, "d_model": 64, "n_layers": L_BASE})
    assert by_name(at_base, "blocks.0.attn.qkv.weight")["init_std"] == pytest.approx(1 / 8)


def test_sp_twin_is_the_same_model_at_the_base():
    """sweep --baseline none leaves the base width out of the twin (benchmarks/regret.py): at the base shape
    `none` and `mup` must give every tensor the same values and the same forward multipliers."""
    shape = {"init_std": None, "d_model": 64, "n_layers": L_BASE}
    sp, mup = (plan_for(r, "adamw", model=shape) for r in ("none", "mup"))
    assert sp["multipliers"] == mup["multipliers"]
    keys = ("init_std", "lr", "eps", "weight_decay", "optimizer")
    assert [{k: t[k] for k in keys} for t in sp["tensors"]] == [{k: t[k] for k in keys} for t in mup["tensors"]]
