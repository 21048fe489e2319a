"""Layer-wise distributed Muon with real torchrun + gloo: equal to the replicated path at 1, 2 and 3 ranks
(DDP and FSDP2), the ownership row in events.jsonl, SIGKILL + resume exact, a resume at another world size.

Seven launches in all, two at a time: the helper (tests/helpers/muon_equivalence.py, every strategy × mode
in one process group) at 1, 2 and 3 ranks; `mupctl train` at 3 FSDP2 ranks (the reference) and the same
run SIGKILLed after step 6 (`MUPCTL_FAULT_STEP`, mupctl/faults.py); then that run resumed at 3 ranks and a
copy of it resumed at 2 DDP ranks.

The exact resume runs under FSDP2: with 3 or more DDP ranks no resume is bit-exact, Muon or not. DDP
rebuilds its gradient buckets after the first backward, so a resumed run's first step all-reduces in the
initial buckets while the uninterrupted run uses the rebuilt ones, and a ring all-reduce over 3+ ranks
sums an element in an order that depends on its place in the bucket (2 ranks: a + b = b + a).
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from conftest import ROOT, run_cli

HELPER = ROOT / "tests" / "helpers" / "muon_equivalence.py"
WORLDS = (1, 2, 3)
STEPS, INTERVAL, KILL = 8, 4, 6
BASE = ["--set", "optimizer.name=muon", "--set", "scaling.recipe=mup", "--set", "scaling.base.d_model=64",
        "--set", "model.seq_len=64", "--set", "train.global_batch=12", "--set", "train.micro_batch=2",
        "--set", f"train.steps={STEPS}", "--set", f"checkpoint.interval={INTERVAL}", "--set", "checkpoint.keep_last=3",
        "--set", "train.log_interval=1", "--set", "train.eval_interval=0", "--set", "train.telemetry_interval=0",
        "--set", "launch.device=cpu", "--set", "launch.strategy=fsdp", "--nproc-per-node", "3"]


def helper(out, world):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                           str(HELPER), "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def parallel(jobs: dict) -> dict:
    """{name: result} of {name: zero-argument callable}, two at a time."""
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every launch of this module: {"helper": {W: report}, "dir": root, name: CompletedProcess}."""
    root = tmp_path_factory.mktemp("muon")
    first = parallel({
        **{f"W{w}": (lambda w=w: helper(root, w)) for w in WORLDS},
        "ref": lambda: run_cli("train", "--run-dir", root / "ref", *BASE),
        "killed": lambda: run_cli("train", "--run-dir", root / "killed", *BASE, env={"MUPCTL_FAULT_STEP": str(KILL)}),
    })
    for w in WORLDS:
        assert first[f"W{w}"].returncode == 0, first[f"W{w}"].stdout[-3000:] + first[f"W{w}"].stderr[-3000:]
    assert first["ref"].returncode == 0, first["ref"].stdout + first["ref"].stderr
    assert first["killed"].returncode == 1, first["killed"].stdout + first["killed"].stderr
    shutil.copytree(root / "killed", root / "other-world")
    second = parallel({
        "resumed": lambda: run_cli("resume", root / "killed"),
        "other-world": lambda: run_cli("resume", root / "other-world", "--nproc-per-node", "2",
                                       "--set", "launch.strategy=ddp"),
    })
    out = {"dir": root, "helper": {w: json.loads((root / f"W{w}.json").read_text()) for w in WORLDS}}
    return out | first | second


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def events(run_dir, kind):
    rows = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == kind]


def params(root, name):
    return torch.load(root / f"{name}.pt", weights_only=True)


def assert_partition(layout, matrices, world):
    """Each rank orthogonalizes a non-empty, disjoint subset; together, every Muon matrix once."""
    ranks = layout["ranks"]
    assert layout["distributed"] == "layerwise" and layout["world_size"] == world and len(ranks) == world
    assert all(ranks), ranks
    flat = [m for r in ranks for m in r]
    assert len(flat) == len(set(flat)) and set(flat) == set(matrices)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_layerwise_equals_replicated(runs, world, strategy):
    """Same losses and, bit for bit, the same final parameters as every rank orthogonalizing everything."""
    report, root = runs["helper"][world], runs["dir"]
    rep, lw = report[f"{strategy}-replicated"], report[f"{strategy}-layerwise"]
    assert lw["losses"] == rep["losses"] and lw["losses"][-1] < lw["losses"][0]
    a, b = params(root, f"W{world}-{strategy}-replicated"), params(root, f"W{world}-{strategy}-layerwise")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert rep["layout"]["distributed"] == "replicated" and "ranks" not in rep["layout"]
    assert_partition(lw["layout"], lw["muon_matrices"], world)
    assert lw["layout"]["strategy"] == strategy


@pytest.mark.parametrize("world", [2, 3])
def test_world_sizes_follow_one_process(runs, world):
    """fp32 reductions in another order flip bf16 roundings inside Newton–Schulz, so across world sizes
    the runs agree closely, not bit for bit (as tests/test_train.py's Muon check)."""
    one = runs["helper"][1]["ddp-replicated"]["losses"]
    ref = params(runs["dir"], "W1-ddp-replicated")
    for key in ("ddp-layerwise", "fsdp-layerwise"):
        assert runs["helper"][world][key]["losses"] == pytest.approx(one, rel=1e-4)
        other = params(runs["dir"], f"W{world}-{key}")
        assert max((ref[n] - other[n]).abs().max().item() for n in ref) < 1e-2


def test_ownership_row_in_events(runs):
    """`auto` at 3 ranks is layer-wise; rank 0 records who orthogonalizes what, with NS GFLOPs per rank."""
    ref = runs["dir"] / "ref"
    row = events(ref, "muon")[0]
    plan = json.loads((ref / "plan.json").read_text())
    assert plan["optimizer_settings"]["muon"]["distributed"] == "auto"
    assert_partition(row, [t["name"] for t in plan["tensors"] if t["optimizer"] == "muon"], 3)
    assert row["strategy"] == "fsdp" and row["step"] == 0 and len(row["ns_gflop"]) == 3 and min(row["ns_gflop"]) > 0


def test_sigkill_then_resume_is_exact(runs):
    killed = runs["dir"] / "killed"
    assert runs["resumed"].returncode == 0, runs["resumed"].stdout + runs["resumed"].stderr
    assert f"resumed at step {INTERVAL}" in runs["resumed"].stdout
    assert losses(killed) == losses(runs["dir"] / "ref") and len(losses(killed)) == STEPS
    assert [r["step"] for r in events(killed, "muon")] == [0, INTERVAL]
    # the momentum buffers are stored per parameter FQN, at their full shape (not per rank)
    meta = FileSystemReader(str(killed / "checkpoints" / f"step_{INTERVAL:08d}")).read_metadata()
    plan = json.loads((killed / "plan.json").read_text())
    for t in plan["tensors"]:
        if t["optimizer"] == "muon":
            assert list(meta.state_dict_metadata[f"optim.state.{t['name']}.momentum_buffer"].size) == t["shape"]


def test_resume_at_another_world_size(runs):
    """Killed at 3 FSDP2 ranks, resumed at 2 DDP ranks: the ownership is recomputed for 2 ranks, the
    momentum buffers load whole from the sharded checkpoint, and the losses follow the 3-rank run's."""
    run, res = runs["dir"] / "other-world", runs["other-world"]
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed at step {INTERVAL}" in res.stdout and "world 2 (ddp" in res.stdout
    row = events(run, "muon")[-1]
    plan = json.loads((run / "plan.json").read_text())
    assert_partition(row, [t["name"] for t in plan["tensors"] if t["optimizer"] == "muon"], 2)
    assert row["step"] == INTERVAL and row["strategy"] == "ddp"
    ref = losses(runs["dir"] / "ref")
    got = losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert [got[s] for s in range(1, INTERVAL + 1)] == [ref[s] for s in range(1, INTERVAL + 1)]
    assert [got[s] for s in range(INTERVAL + 1, STEPS + 1)] == pytest.approx(
        [ref[s] for s in range(INTERVAL + 1, STEPS + 1)], rel=1e-4)
