"""The realized model and optimizer equal the plan, tensor by tensor; forward multipliers act as stated."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from mupctl.errors import UserError
from mupctl.model import GPT, apply_rope
from mupctl.optim import MuonAdamW, build_optimizer, optimizer_parts
from mupctl.plan import compile_plan
from mupctl.recipe import load_recipe
from mupctl.verify import verify

VARIANTS = {
    "default": {},
    "layernorm-bias-gelu-learned": {"model": {"norm": "layernorm", "bias": True, "activation": "gelu",
                                              "position": "learned"}},
    "gqa": {"model": {"n_heads": 8, "n_kv_heads": 2}},
    "zero_init_query": {"scaling": {"zero_init_query": True}},
    "readout_zero_init": {"scaling": {"readout_zero_init": True}},
}


def make_plan(recipe="mup", opt="adamw", tie=False, **extra):
    """d_model 128 on base 32 (m = 4), 4 layers on base 2 (λ = 2)."""
    raw = {"model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "seq_len": 32, "tie_embeddings": tie},
           "scaling": {"recipe": recipe, "base": {"d_model": 32, "n_layers": 2}},
           "optimizer": {"name": opt, "weight_decay": 0.0 if opt == "adam" else None}}
    for section, values in extra.items():
        raw[section] = {**raw.get(section, {}), **values}
    return compile_plan(load_recipe(raw=raw))


def with_multipliers(plan, **values):
    """The plan with some forward multipliers replaced."""
    return plan.model_copy(update={"multipliers": plan.multipliers.model_copy(update=values)})


def tokens(plan, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, plan.model.vocab_size, (batch, plan.model.seq_len), generator=g)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd", "muon"])
@pytest.mark.parametrize("recipe", ["none", "mup", "depth_mup"])
def test_realized_equals_plan(recipe, opt, tie):
    if recipe == "depth_mup" and opt == "sgd":
        with pytest.raises(UserError):
            make_plan(recipe, opt, tie)
        return
    plan = make_plan(recipe, opt, tie)
    assert verify(plan) == []


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("recipe,opt", [("mup", "adamw"), ("depth_mup", "adamw"), ("mup", "muon"), ("depth_mup", "muon"),
                                       ("none", "sgd")])
def test_variants_equal_plan(variant, recipe, opt):
    plan = make_plan(recipe, opt, **VARIANTS[variant])
    assert verify(plan) == []


def test_zero_init_query_rows_are_zero_and_readout_zero():
    plan = make_plan(scaling={"zero_init_query": True, "readout_zero_init": True})
    model = GPT(plan)
    q_rows = plan.model.n_heads * plan.model.d_head
    qkv = model.blocks[0].attn.qkv.weight
    assert qkv[:q_rows].abs().max() == 0 and qkv[q_rows:].abs().max() > 0
    assert model.lm_head.weight.abs().max() == 0


def test_roles_come_from_modules():
    plan = make_plan(tie=True, **VARIANTS["layernorm-bias-gelu-learned"])
    model = GPT(plan)
    assert model.param_roles() == {t.name: t.role for t in plan.tensors}
    assert [n for n, _ in model.named_parameters()] == [t.name for t in plan.tensors]
    assert {n: tag.in_branch for n, tag in model.tags.items()} == {t.name: t.in_branch for t in plan.tensors}


# --- verify catches what is broken ---------------------------------------------------------------------

def fields(mismatches):
    return {(m.tensor, m.field) for m in mismatches}


def test_verify_reports_wrong_lr():
    plan = make_plan()
    model = GPT(plan)
    opt = build_optimizer(model, plan)
    group = next(g for g in opt.param_groups if "hidden" in g["roles"])
    group["peak_lr"] *= 2
    found = fields(verify(plan, model, opt))
    assert ("blocks.0.attn.qkv.weight", "lr") in found and ("tok_emb.weight", "lr") not in found


def test_verify_reports_wrong_init_std():
    plan = make_plan()
    model = GPT(plan)
    std = next(t.init_std for t in plan.tensors if t.name == "blocks.1.mlp.down.weight")
    with torch.no_grad():
        model.blocks[1].mlp.down.weight.normal_(0, std * 1.1)
    mismatches = verify(plan, model)
    assert fields(mismatches) == {("blocks.1.mlp.down.weight", "init_std")}
    assert mismatches[0].as_dict()["expected"] == pytest.approx(std)


def test_verify_reports_zero_rows_ones_and_wrong_optimizer():
    plan = make_plan(scaling={"zero_init_query": True})
    model = GPT(plan)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[0, 0] = 1.0
        model.norm_f.weight[3] = 0.5
    adam_plan = make_plan(optimizer={"name": "adam", "weight_decay": 0.0}, scaling={"zero_init_query": True})
    found = fields(verify(plan, model, build_optimizer(model, adam_plan)))
    assert {("blocks.0.attn.qkv.weight", "zero_rows"), ("norm_f.weight", "init"),
            ("tok_emb.weight", "optimizer")} <= found


def test_verify_reports_names_roles_and_multipliers():
    plan = make_plan()
    model = GPT(plan)
    model.blocks[0].mlp.down.roles["weight"] = "hidden"
    model.tags = {**model.tags, "blocks.0.mlp.down.weight": model.tags["blocks.0.mlp.up.weight"]}
    model.blocks[2].branch_mult = 0.5
    found = fields(verify(plan, model, build_optimizer(model, plan)))
    assert {("blocks.0.mlp.down.weight", "role"), ("blocks.2", "multipliers.residual_branch")} <= found

    model.extra = torch.nn.Linear(2, 2)
    found = fields(verify(plan, model))
    assert {("extra.weight", "present"), ("extra.bias", "present")} <= found
    with pytest.raises(ValueError, match="not in the plan"):
        build_optimizer(model, plan)


# --- forward ---------------------------------------------------------------------------------------

def test_output_multiplier_scales_logits():
    plan = make_plan()
    torch.manual_seed(0)
    base = GPT(plan)(tokens(plan))
    plan2 = with_multipliers(plan, output_logits=3 * plan.multipliers.output_logits)
    torch.manual_seed(0)
    assert torch.allclose(GPT(plan2)(tokens(plan)), 3 * base, rtol=1e-5, atol=1e-6)


def test_embedding_and_branch_multipliers():
    plan = make_plan()
    torch.manual_seed(0)
    model = GPT(plan)
    model.record = {}
    model(tokens(plan))
    rec = model.record
    assert set(rec) == {"embedding", "attn_out", "mlp_out", "residual", "logits", "logits_centered"}

    plan2 = with_multipliers(plan, embedding=2.0, residual_branch=0.0)
    torch.manual_seed(0)
    model2 = GPT(plan2)
    model2.record = {}
    model2(tokens(plan))
    assert model2.record["embedding"] == pytest.approx(2 * rec["embedding"].item(), rel=1e-5)
    assert model2.record["attn_out"] == 0 and model2.record["mlp_out"] == 0
    assert model2.record["residual"] == pytest.approx(model2.record["embedding"].item(), rel=1e-6)


def test_attention_matches_reference():
    """Fused qkv split, GQA head grouping, RoPE and the plan's attention scale, against a direct softmax."""
    plan = make_plan(model={"n_heads": 8, "n_kv_heads": 2})
    torch.manual_seed(0)
    model = GPT(plan)
    attn, shape = model.blocks[0].attn, plan.model
    x = torch.randn(2, shape.seq_len, shape.d_model)
    B, T, H, Hkv, dh = 2, shape.seq_len, shape.n_heads, shape.n_kv_heads, shape.d_head
    q, k, v = (x @ attn.qkv.weight.T).split([H * dh, Hkv * dh, Hkv * dh], dim=-1)
    q, k, v = (t.view(B, T, -1, dh).transpose(1, 2) for t in (q, k, v))
    rope = (model.rope_cos[:T], model.rope_sin[:T])
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    scores = (q @ k.transpose(-1, -2)) * plan.multipliers.attention_scale
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    ref = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * dh) @ attn.proj.weight.T
    assert torch.allclose(attn(x, rope), ref, atol=1e-5)


def test_causal_and_loss():
    plan = make_plan(**VARIANTS["layernorm-bias-gelu-learned"])
    model = GPT(plan)
    idx = tokens(plan)
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % plan.model.vocab_size
    assert torch.equal(model(idx)[:, :-1], model(idx2)[:, :-1])
    logits = model(idx)
    loss = model(idx, idx)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), idx.flatten()).item(), rel=1e-6)


def test_activation_checkpointing_is_exact():
    plan = make_plan()
    torch.manual_seed(0)
    a = GPT(plan)
    torch.manual_seed(0)
    b = GPT(plan, activation_checkpointing=True)
    idx = tokens(plan)
    a.record, b.record = {}, {}
    a(idx, idx).backward()
    b(idx, idx).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6), name
    assert {k: v.item() for k, v in a.record.items()} == pytest.approx({k: v.item() for k, v in b.record.items()})


def test_meta_device_then_init():
    plan = make_plan()
    model = GPT(plan, device="meta")
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    assert verify(plan, model) == []
    torch.manual_seed(0)
    ref = GPT(plan)
    idx = tokens(plan)
    assert torch.equal(model(idx), ref(idx))


# --- optimizer --------------------------------------------------------------------------------------

def test_groups_carry_peak_lr_and_roles():
    plan = make_plan()
    opt = build_optimizer(GPT(plan), plan)
    assert isinstance(opt, torch.optim.AdamW)
    keys = {(t.lr, t.eps, t.weight_decay) for t in plan.tensors}
    assert len(opt.param_groups) == len(keys)
    assert all(g["lr"] == g["peak_lr"] and g["roles"] for g in opt.param_groups)
    assert optimizer_parts(opt) == [opt]


def test_muon_wrapper_schedule_and_state():
    plan = make_plan(opt="muon")
    model = GPT(plan)
    opt = build_optimizer(model, plan)
    assert isinstance(opt, MuonAdamW) and isinstance(opt, torch.optim.Optimizer)
    assert sorted(type(o).__name__ for o in optimizer_parts(opt)) == ["AdamW", "Muon"]
    muon = next(o for o in opt.optimizers if isinstance(o, torch.optim.Muon))
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    idx = tokens(plan)
    model(idx, idx).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())
    state = opt.state_dict()
    opt.load_state_dict(copy.deepcopy(state))  # replaces the inner optimizers' group dicts
    for g in opt.param_groups:
        g["lr"] = g["peak_lr"] * 0.5
    inner = [g for o in opt.optimizers for g in o.param_groups]
    assert all(math.isclose(g["lr"], g["peak_lr"] * 0.5) for g in inner)
    assert len(opt.state) == sum(1 for _ in model.parameters())
