"""Muon in one process: the ownership layout, batched Newton–Schulz, the update against torch.optim.Muon,
and the optimizer registry (plan numbers, state bytes, checkpoint keys, `plan --explain`)."""

import copy
import itertools
import json
import math

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from conftest import invoke
from mupctl.checkpoint import Checkpointer
from mupctl.model import GPT
from mupctl.optim import CLASSES, MuonAdamW, build_optimizer, optimizer_parts
from mupctl.optim import layout
from mupctl.optim.muon import Muon
from mupctl.optim.newton_schulz import orthogonalize
from mupctl.plan import build_plan, compile_plan
from mupctl.recipe import load_recipe
from mupctl.scaling.optimizers import OPTIMIZERS, WIDTH, state_bytes
from mupctl.architecture import ROLES

# GPT-2 124M's Muon matrices (qkv, proj, up, down per block), and a SwiGLU model's
GPT2 = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12
SWIGLU = [(384, 128), (128, 128), (1024, 128), (128, 512)] * 3


# -- layout -------------------------------------------------------------------------------------------

def test_ns_flops_formula():
    # 5 steps on 96 x 32: X Xᵀ 2·32²·96, G·G 2·32³, (bG + cG²)X 2·32²·96 per step
    assert layout.ns_flops((96, 32), 5) == 5 * (2 * 32 * 32 * 96 * 2 + 2 * 32**3)
    assert layout.ns_flops((32, 96), 5) == layout.ns_flops((96, 32), 5)


@pytest.mark.parametrize("shapes", [GPT2, SWIGLU, [(64, 64)] * 2, [(10, 20), (30, 5), (7, 7)]])
@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
def test_assignment_is_a_balanced_partition(shapes, world):
    owners = layout.assign(shapes, world, 5)
    assert owners == layout.assign(list(shapes), world, 5)  # deterministic
    assert all(0 <= r < world for r in owners)
    loads = layout.loads(shapes, owners, world, 5)
    biggest = max(layout.ns_flops(s, 5) for s in shapes)
    assert max(loads) - min(loads) <= biggest
    for s in set(shapes):  # every shape group split as evenly as it can be
        counts = [sum(1 for o, t in zip(owners, shapes) if t == s and o == r) for r in range(world)]
        assert max(counts) - min(counts) <= 1
    if len(shapes) >= world:
        assert sorted(set(owners)) == list(range(world))  # nobody idle
    rounds = layout.rounds(shapes, owners, world, 5)
    seen = [i for rnd in rounds for idx in rnd.ranks for i in idx]
    assert sorted(seen) == list(range(len(shapes)))  # every matrix in exactly one round
    for rnd in rounds:
        assert len(rnd.ranks) == world
        assert all(shapes[i] == rnd.shape and owners[i] == r for r, idx in enumerate(rnd.ranks) for i in idx)
    sizes = [rnd.width * rnd.shape[0] * rnd.shape[1] for rnd in rounds]
    assert sizes == sorted(sizes, reverse=True)  # the last (exposed) round is the smallest


def test_assignment_example_and_round_cap():
    """Three ranks over one SwiGLU block: by cost 1024x128 (rank 0), 128x512 (rank 1), 384x128 (rank 2),
    then 128x128 to the least-loaded rank, 2; a cap of one matrix per round gives one round per matrix
    per rank."""
    shapes = [(384, 128), (128, 128), (1024, 128), (128, 512)]
    assert layout.assign(shapes, 3, 5) == [2, 2, 0, 1]
    owners = layout.assign(GPT2, 8, 5)
    rounds = layout.rounds(GPT2, owners, 8, 5, round_elements=768 * 768)
    assert all(rnd.width == 1 for rnd in rounds) and len(rounds) == 4 * 2  # 12 matrices a shape: 2 per rank


# -- Newton–Schulz ------------------------------------------------------------------------------------

def test_batched_newton_schulz_matches_the_per_matrix_chain():
    """Stated tolerance: within 2 bf16 ulps of the largest entry (2⁻⁷·max|O|); on the CPU the batched
    bmm/baddbmm chain is in fact bit-identical to the per-matrix mm/addmm chain."""
    g = torch.Generator().manual_seed(0)
    for shape in [(96, 32), (32, 96), (64, 64), (130, 70)]:
        x = torch.randn(5, *shape, generator=g)
        batched = orthogonalize(x, 5)
        single = torch.stack([orthogonalize(m, 5) for m in x])
        assert batched.dtype == torch.bfloat16 and batched.shape == x.shape
        diff = (batched.float() - single.float()).abs().max().item()
        assert diff <= 2**-7 * single.float().abs().max().item()
        assert diff == 0  # CPU
        s = torch.linalg.svdvals(single.float())
        assert s.median() > 0.5 and s.max() < 1.5  # orthogonalized: singular values pulled towards 1
        stacked = x.to(torch.bfloat16)  # as Muon passes its batch: already bf16, so no copy is made
        before = stacked.clone()
        assert torch.equal(orthogonalize(stacked, 5), batched) and torch.equal(stacked, before)  # never in place


def test_per_matrix_chain_is_torch_muons():
    helper = getattr(torch.optim._muon, "_zeropower_via_newtonschulz", None)
    if helper is None:
        pytest.skip("this torch has no torch.optim._muon._zeropower_via_newtonschulz")
    x = torch.randn(96, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(orthogonalize(x, 5), helper(x, (3.4445, -4.7750, 2.0315), 5, 1e-7))


def matrices(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in [(48, 16), (16, 48), (48, 16), (32, 32), (16, 16)]]


@pytest.mark.parametrize("adjust,nesterov,batched", list(itertools.product(["original", "match_rms_adamw"],
                                                                            [True, False], [True, False])))
def test_update_equals_torch_muon(adjust, nesterov, batched):
    """Same parameters, gradients and param groups: momentum, Nesterov, adjust_lr_fn, decoupled decay
    with the unadjusted lr (two groups with different lr and wd; mid-way a state_dict round trip, which
    replaces the group dicts, then an lr change as a schedule makes it) are torch's, bit for bit on
    the CPU."""
    ours, ref = matrices(), matrices()
    ours = [torch.nn.Parameter(p) for p in ours]
    ref = [torch.nn.Parameter(p) for p in ref]
    kw = dict(momentum=0.9, nesterov=nesterov, ns_steps=5, adjust_lr_fn=adjust)
    groups = lambda ps: [{"params": ps[:3], "lr": 0.02, "weight_decay": 0.1},  # noqa: E731
                         {"params": ps[3:], "lr": 0.05, "weight_decay": 0.0}]
    a, b = Muon(groups(ours), batched=batched, **kw), torch.optim.Muon(groups(ref), **kw)
    g = torch.Generator().manual_seed(3)
    for step in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for p, q, gr in zip(ours, ref, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        if step == 2:
            for opt in (a, b):
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))
                opt.param_groups[0]["lr"] = 0.01
        a.step()
        b.step()
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
        assert torch.equal(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])
    assert a.layout()["distributed"] == "replicated" and a.world == 1


def test_missing_gradient_is_skipped_like_torch():
    ours, ref = [torch.nn.Parameter(p) for p in matrices()], [torch.nn.Parameter(p) for p in matrices()]
    a, b = Muon(ours, lr=0.02), torch.optim.Muon(ref, lr=0.02)
    for p, q in zip(ours[1:], ref[1:]):
        p.grad = q.grad = torch.ones_like(p)
    a.step()
    b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))
    assert ours[0] not in a.state


def test_bad_settings():
    with pytest.raises(ValueError, match="distributed"):
        Muon(matrices(), distributed="sharded")
    with pytest.raises(ValueError, match="same ns_steps"):
        Muon([{"params": matrices()[:2], "ns_steps": 3}, {"params": matrices()[2:]}])


# -- the registry -------------------------------------------------------------------------------------

def plan_of(*overrides, **kw):
    return compile_plan(load_recipe("recipes/tiny.yaml", ["scaling.recipe=mup", "scaling.base.d_model=64",
                                                           *overrides]), **kw)


def test_every_registry_entry_is_complete():
    for name, e in OPTIMIZERS.items():
        assert CLASSES[name] is not None and issubclass(CLASSES[name], torch.optim.Optimizer)
        for role, ndim, adjust in itertools.product(ROLES, (1, 2), ("original", "match_rms_adamw")):
            fam = e.family(role, ndim, adjust)
            assert fam in e.width or e.part(fam) != name, f"{name}: family {fam} has no table"
            assert e.part(fam) in OPTIMIZERS
            table = WIDTH[fam]
            if fam in e.width:
                assert table is e.width[fam]
        for fam, table in e.width.items():
            for role, row in table.items():
                assert set(row) == {"init_std", "lr", "eps", "weight_decay"}, (name, fam, role)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_plan_state_bytes_and_built_optimizer_follow_the_registry(name):
    over = [f"optimizer.name={name}"] + (["optimizer.weight_decay=0"] if name == "adam" else [])
    plan = plan_of(*over)
    expected = sum(math.prod(t.shape) * state_bytes(t.optimizer, plan.optimizer_settings) for t in plan.tensors)
    assert plan.summary["memory_per_gpu_bytes"]["optimizer_state"] == expected
    model = GPT(plan)
    opt = build_optimizer(model, plan)
    parts = {type(o): o for o in optimizer_parts(opt)}
    assert set(parts) == {CLASSES[t.optimizer] for t in plan.tensors}
    idx = torch.randint(0, plan.model.vocab_size, (2, 16))
    model(idx, idx).backward()
    opt.step()
    kept = {p: set(s) for o in optimizer_parts(opt) for p, s in o.state.items()}
    for n, p in model.named_parameters():  # the state each entry declares is what the optimizer keeps
        part = next(t.optimizer for t in plan.tensors if t.name == n)
        declared = set(OPTIMIZERS[part].state(plan.optimizer_settings))
        assert declared <= kept.get(p, set()), (n, declared, kept.get(p))


def test_muon_state_is_checkpointed_per_parameter_fqn(tmp_path):
    plan = plan_of("optimizer.name=muon")
    model = GPT(plan)
    opt = build_optimizer(model, plan)
    assert isinstance(opt, MuonAdamW)
    idx = torch.randint(0, plan.model.vocab_size, (2, 16))
    model(idx, idx).backward()
    opt.step()
    Checkpointer(tmp_path).save(1, model, optimizer_parts(opt), {})
    keys = set(FileSystemReader(str(tmp_path / "step_00000001")).read_metadata().state_dict_metadata)
    for t in plan.tensors:
        for state in OPTIMIZERS[t.optimizer].state(plan.optimizer_settings):
            assert f"optim.state.{t.name}.{state}" in keys


def test_explain_and_the_layerwise_check(tmp_path):
    res = invoke("plan", "recipes/muon-mup.yaml", "--explain")
    assert res.returncode == 0, res.stderr
    assert "optimizers (registry" in res.stdout and "momentum_buffer (4 B)" in res.stdout
    assert "exp_avg, exp_avg_sq (8 B)" in res.stdout and "muon_match_rms" in res.stdout
    res = invoke("plan", "recipes/tiny.yaml", "--set", "optimizer.muon.distributed=layerwise")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "optimizer.muon.distributed" in res.stderr and "optimizer.name: muon" in res.stderr
    assert invoke("plan", "recipes/tiny.yaml", "--set", "optimizer.muon.distributed=nope").returncode == 2


def test_distributed_mode_may_change_on_resume_without_changing_the_hash():
    a = build_plan(load_recipe("recipes/muon-mup.yaml"))
    b = build_plan(load_recipe("recipes/muon-mup.yaml", ["optimizer.muon.distributed=replicated",
                                                         "optimizer.muon.batched_ns=false"]))
    assert a["hash"] == b["hash"]
    from mupctl.plan import changed_fields, resumable
    changes = [c for c in changed_fields(a, b) if c[0] != "hash"]
    assert [c[0] for c in changes] == ["optimizer_settings.muon.distributed", "optimizer_settings.muon.batched_ns"]
    assert all(resumable(c[0]) for c in changes)
    c = build_plan(load_recipe("recipes/muon-mup.yaml", ["optimizer.muon.ns_steps=4"]))
    assert c["hash"] != a["hash"]  # what the update computes is still hashed
    assert json.dumps(a["optimizer_settings"]["muon"])  # plain JSON
