"""Checkpointer: bit-exact resume under real torchrun (DDP, FSDP2, Muon+AdamW, single process),
retention, fallback past a corrupted checkpoint, leftover tmp dirs, RNG restore."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mupctl.checkpoint import Checkpointer
from mupctl.errors import RunFailure

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "helpers" / "ckpt_worker.py"


def start(run_dir, tag, *args, nproc=2):
    """Start the worker under torchrun (checkpoints in run_dir/ckpt); finish() collects it."""
    out = run_dir / f"{tag}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(WORKER), "--ckpt", str(run_dir / "ckpt"), "--out", str(out), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


def finish(started):
    """(per-rank records, stderr) of a started worker; fails the test on a non-zero exit."""
    proc, out = started
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return json.loads(out.read_text()), stderr


# The first (saving) run of every scenario, launched concurrently: each launch is mostly one
# core's worth of Python/torch start-up, so this halves the wall time on a 2-core machine.
FIRST_RUNS = {
    "ddp": (["--parallel", "ddp", "--save", "2,4"], 2),
    "fsdp": (["--parallel", "fsdp", "--save", "1,2,3,4"], 2),
    "muon": (["--parallel", "fsdp", "--opt", "muon", "--save", "2,4"], 2),
    "single": (["--parallel", "none", "--save", "2,4", "--async-save"], 1),
}


def damage_fsdp(ckpt):
    meta = ckpt / "step_00000004" / ".metadata"
    meta.write_bytes(meta.read_bytes()[:20])  # truncated
    stale = ckpt / ".tmp-step_00000005"  # a kill in the middle of a save
    (stale / "rng").mkdir(parents=True)
    (stale / "__0_0.distcp").write_bytes(b"partial")


def damage_muon(ckpt):
    (ckpt / "step_00000004" / "__1_0.distcp").unlink()


# The resuming run of every scenario: (damage done to the first run's checkpoints, its arguments, ranks).
SECOND_RUNS = {
    "ddp": (None, ["--parallel", "ddp", "--save", "6", "--resume", "--seed", "7"], 2),
    "fsdp": (damage_fsdp, ["--parallel", "fsdp", "--save", "4,6", "--resume", "--seed", "7"], 2),
    "muon": (damage_muon, ["--parallel", "fsdp", "--opt", "muon", "--save", "4,6", "--resume", "--seed", "7"], 2),
    "single": (None, ["--parallel", "none", "--resume", "--seed", "7"], 1),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{scenario: (run dir, first run's per-rank records, its stderr, second run's records, its stderr)}:
    every first run at once, then the damage of SECOND_RUNS, then every second run at once."""
    dirs = {k: tmp_path_factory.mktemp(k) for k in FIRST_RUNS}
    started = {k: start(dirs[k], "a", *args, nproc=n) for k, (args, n) in FIRST_RUNS.items()}
    first = {k: finish(started[k]) for k in FIRST_RUNS}
    first_names = {k: names(dirs[k] / "ckpt") for k in FIRST_RUNS}
    for k, (damage, _, _) in SECOND_RUNS.items():
        if damage:
            damage(dirs[k] / "ckpt")
    started = {k: start(dirs[k], "b", *args, nproc=n) for k, (_, args, n) in SECOND_RUNS.items()}
    second = {k: finish(started[k]) for k in SECOND_RUNS}
    return {k: (dirs[k], *first[k], *second[k], first_names[k]) for k in FIRST_RUNS}


def assert_resumed(first, second, loaded):
    """Every rank of `second` loaded step `loaded` and reproduced `first` bit-for-bit from there."""
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert b["loaded"] == loaded
        assert b["probes"][str(loaded)] == a["probes"][str(loaded)]  # RNG restored (torch/python/numpy)
        assert b["losses"], "resumed run trained no steps"
        for step, loss in b["losses"].items():
            assert int(step) > loaded
            assert loss == a["losses"][step], f"step {step}: {loss!r} != {a['losses'][step]!r}"


def names(ckpt):
    return sorted(p.name for p in ckpt.iterdir())


@pytest.mark.slow
def test_ddp_adamw_resume_and_world_size_change(runs, capfd):
    run, first, _, second, _, _ = runs["ddp"]
    assert_resumed(first, second, loaded=4)
    assert second[0]["meta"]["tokens"] == 4 * 32 * 2 and second[0]["meta"]["world_size"] == 2
    assert first[0]["losses"]["5"] != first[1]["losses"]["5"]  # ranks draw different data
    ckpt = run / "ckpt"
    assert names(ckpt) == ["latest", "step_00000004", "step_00000006"]
    assert (ckpt / "latest").read_text() == "step_00000006"
    step6 = ckpt / "step_00000006"
    assert {".metadata", "meta.json", "COMMITTED", "rng"} <= set(os.listdir(step6))
    assert sorted(os.listdir(step6 / "rng")) == ["rank0.pt", "rank1.pt"]
    # World size 2 -> 1, in this process (no process group): DCP reshards, RNG is skipped.
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    meta = Checkpointer(ckpt).load_latest(model, [opt])
    assert meta["step"] == 6 and meta["world_size"] == 2
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert int(opt.state[model[0].weight]["step"]) == 6  # AdamW state came back too
    assert "world size 2, now 1; RNG states not restored" in capfd.readouterr().err


@pytest.mark.slow
def test_fsdp_adamw_retention_corrupt_metadata_and_stale_tmp(runs):
    run, first, _, second, err, first_names = runs["fsdp"]
    ckpt = run / "ckpt"
    assert first_names == ["latest", "step_00000003", "step_00000004"]  # keep_last=2
    # damage_fsdp truncated step 4's .metadata and left a stale .tmp-step_00000005
    assert_resumed(first, second, loaded=3)
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, err  # rank 0 only
    assert warnings[0].startswith("warning: checkpoint step_00000004 is unreadable (")
    assert warnings[0].endswith("); falling back to step_00000003")
    assert names(ckpt) == ["latest", "step_00000004", "step_00000006"]  # stale tmp purged, 4 rewritten


@pytest.mark.slow
def test_fsdp_muon_adamw_pair_missing_shard(runs):
    run, first, _, second, err, _ = runs["muon"]  # damage_muon removed a shard of step 4
    assert "warning: checkpoint step_00000004 is unreadable (" in err
    assert "); falling back to step_00000002" in err
    assert_resumed(first, second, loaded=2)


@pytest.mark.slow
def test_single_process_resume_async_falls_back_to_sync(runs):
    run, first, err, second, _, _ = runs["single"]
    assert err.count("warning: checkpoint.async_save needs CUDA") == 1  # said once for two saves
    assert_resumed(first, second, loaded=4)


def test_in_process_fresh_listing_and_unreadable(tmp_path, capsys):
    model = nn.Linear(3, 2)
    ck = Checkpointer(tmp_path / "ckpt", keep_last=1)
    assert ck.checkpoints() == [] and ck.load_latest(model, []) is None  # fresh run
    ck.save(10, model, [], {"tokens": 1})
    ck.save(20, model, [], {"tokens": 2})
    assert [s for s, _ in ck.checkpoints()] == [20]
    assert ck.load_latest(model, [])["tokens"] == 2
    (tmp_path / "ckpt" / "step_00000020" / "COMMITTED").unlink()
    with pytest.raises(RunFailure, match="no readable checkpoint"):
        ck.load_latest(model, [])
    assert "step_00000020 is unreadable (FileNotFoundError: missing COMMITTED); falling back to none left" \
        in capsys.readouterr().err
    with pytest.raises(ValueError):
        Checkpointer(tmp_path, keep_last=0)


def test_cadence_is_the_checkpointers(tmp_path):
    """`due`: every `interval` steps and after the last one, never with interval 0; `maybe_save` saves
    exactly then, or at a stop when checkpointing is on, and says how long it blocked."""
    model = nn.Linear(3, 2)
    every4 = Checkpointer(tmp_path / "a", interval=4)
    assert [s for s in range(1, 11) if every4.due(s)] == [4, 8] and every4.due(10, last=True)
    assert not any(Checkpointer(tmp_path / "b").due(s, last=True) for s in range(1, 11))
    saved = [s for s in range(1, 11) if every4.maybe_save(s, model, [], {}, last=s == 10, stop=s == 5) is not None]
    assert saved == [4, 5, 8, 10] and [s for s, _ in every4.checkpoints()] == [8, 10]  # keep_last 2
    assert Checkpointer(tmp_path / "b").maybe_save(5, model, [], {}, stop=True) is None
    assert not (tmp_path / "b").exists()
