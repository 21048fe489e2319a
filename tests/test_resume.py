"""Checkpoints and `mupctl resume` end to end: kills, corrupt checkpoints, restarts, divergence.

Every run here is real: `mupctl train` → torchrun → gloo workers on the CPU, fp32. "Equal" means
bit for bit: the losses in metrics.jsonl are compared with ==. The uninterrupted reference runs are
made once (`references`); tests that only need a run with checkpoints work on a copy of the
finished 1-rank reference (checkpoints at steps 4, 8 and 12) instead of training one of their own.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, invoke, run_cli, run_many
from mupctl.launch.launcher import lock_run_dir
from mupctl.recipe import load_recipe

STEPS, INTERVAL = 12, 4
BASE = ["--set", f"train.steps={STEPS}", "--set", f"checkpoint.interval={INTERVAL}", "--set", "checkpoint.keep_last=3",
        "--set", "model.seq_len=64", "--set", "train.global_batch=8", "--set", "train.micro_batch=4",
        "--set", "train.log_interval=1", "--set", "train.eval_interval=0", "--set", "train.telemetry_interval=0",
        "--set", "launch.device=cpu"]
LAYOUTS = {"1rank": [], "2ranks-ddp": ["--nproc-per-node", "2"],
           "2ranks-fsdp": ["--nproc-per-node", "2", "--set", "launch.strategy=fsdp"],
           # 3 ranks: a ring all-reduce's sum order depends on the bucket layout (TrainStep.settle_buckets)
           "3ranks-ddp": ["--nproc-per-node", "3", "--set", "train.global_batch=12"]}


def losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            assert row["step"] not in out, "a step was logged twice"
            out[row["step"]] = row["loss"]
    return out


def starts(run_dir):
    """The `state` of every worker start in events.jsonl ("fresh", "resumed at step N…")."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e["state"] for e in events if e["event"] == "start"]


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """{layout: the uninterrupted run's directory}, made two at a time."""
    root = tmp_path_factory.mktemp("ref")
    done = run_many({layout: ["train", "--run-dir", root / layout, *BASE, *args] for layout, args in LAYOUTS.items()})
    for layout, res in done.items():
        assert res.returncode == 0, res.stdout + res.stderr
        assert sorted(losses(root / layout)) == list(range(1, STEPS + 1))
    return {layout: root / layout for layout in LAYOUTS}


@pytest.fixture
def finished(references, tmp_path):
    """A copy of the finished 1-rank reference run (checkpoints at 4, 8, 12) for this test to change."""
    return shutil.copytree(references["1rank"], tmp_path / "run")


def kill_at_step(run_dir, args, step):
    """Start `mupctl train` in its own session and SIGKILL the whole tree once `step` is logged."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mupctl", "train", "--run-dir", str(run_dir), *args], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and step in losses(run_dir):
            break
        time.sleep(0.005)
    tree = descendants(proc.pid)  # torchrun (in its own session) and the workers (in theirs)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group: the launcher alone
    proc.wait()
    settle(run_dir)
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(pid) for pid in tree):
        time.sleep(0.1)
    assert tree and not any(alive(pid) for pid in tree), "torchrun or a worker outlived the killed launcher"


def descendants(pid):
    """PIDs below `pid` in the process tree (Linux /proc)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [c for c, p in parent.items() if p in frontier]
        found += children
        frontier = children
    return found


def alive(pid):
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def settle(run_dir, quiet_s=1.0, limit_s=60):
    """Wait until nothing in run_dir changes for quiet_s: the workers run in their own sessions and
    exit only once they notice their agent died (launch.child.die_with_parent polls every 0.1 s)."""
    def state():
        try:
            return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
        except FileNotFoundError:  # a file vanished mid-listing: still changing
            return None
    last, since, end = state(), time.time(), time.time() + limit_s
    while time.time() < end and time.time() - since < quiet_s:
        time.sleep(0.1)
        now = state()
        if now != last or now is None:
            last, since = now, time.time()


KILLED_STATES = {}  # layout -> (state.json, status --json) of the killed run, before its resume


@pytest.fixture(scope="module")
def killed(references, tmp_path_factory):
    """Per layout: a run SIGKILLed (launcher, torchrun and workers) after a random step past the first
    checkpoint, then resumed. The kills run at once (threads), then the resumes two at a time:
    {layout: (run dir, kill step, losses before the resume, the resume's CompletedProcess)}; `killed_states`
    keeps what state.json and `mupctl status` said between the kill and the resume."""
    root = tmp_path_factory.mktemp("killed")
    # after the first checkpoint and at least INTERVAL steps before the end: a CPU step can take a few
    # ms, and a kill aimed at step 10 of 12 once landed after the run had finished
    steps = {layout: random.Random(layout).randint(INTERVAL + 1, STEPS - INTERVAL) for layout in LAYOUTS}
    errors = []

    def kill(layout):
        try:
            kill_at_step(root / layout, BASE + LAYOUTS[layout], steps[layout])
        except AssertionError as err:
            errors.append(f"{layout}: {err}")

    threads = [threading.Thread(target=kill, args=(layout,)) for layout in LAYOUTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    before = {layout: losses(root / layout) for layout in LAYOUTS}
    for layout in LAYOUTS:
        KILLED_STATES[layout] = (json.loads((root / layout / "state.json").read_text()),
                                 json.loads(invoke("status", root / layout, "--json").stdout))
    resumed = run_many({layout: ["resume", root / layout] for layout in LAYOUTS})
    return {layout: (root / layout, steps[layout], before[layout], resumed[layout]) for layout in LAYOUTS}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sigkill_then_resume_is_bit_exact(references, killed, layout):
    run, kill_step, before, res = killed[layout]
    assert any((run / "checkpoints").glob("step_*")), "killed before the first checkpoint"
    assert before != losses(references[layout]), f"the kill aimed at step {kill_step} landed after the run finished"
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resumed at step" in res.stdout
    assert losses(run) == losses(references[layout])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_sigkilled_launcher_leaves_a_run_that_says_so(killed, layout):
    """kill -9 of the launcher alone: nobody left to write but the workers, whose rank 0 records the crash
    before it follows its launcher (run_state.record_orphaned); status agrees, and the resume takes over."""
    run, kill_step, before, res = killed[layout]
    state, status = KILLED_STATES[layout]
    assert state["state"] == "crashed" and state["exit_code"] is None, state
    assert state["reason"].startswith(f"the launcher (mupctl pid {state['pid']}) was killed after step ")
    assert kill_step <= state["step"] <= max(before) and state["checkpoint"].startswith("checkpoints/step_")
    assert status["state"] == "crashed" and status["alive"] is False and status["step"] == max(before)
    assert status["checkpoint"] == str(run / state["checkpoint"])
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    ends = [e for e in events if e["event"] == "end"]
    assert [e["state"] for e in ends] == ["crashed", "finished"]  # the kill, then the resume


def test_resume_says_what_it_would_continue_before_launching(finished):
    """train.steps at or below the newest checkpoint: exit 2 naming it; a finished run and no new
    train.steps: said, nothing launched or written, exit 0 (also as JSON)."""
    before = snapshot(finished)
    res = invoke("resume", finished, "--set", f"train.steps={STEPS - INTERVAL}")
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"error: train.steps: is {STEPS - INTERVAL}, but the newest checkpoint is at step {STEPS}: "
                          f"a resume continues from there, so give train.steps > {STEPS}\n")
    res = invoke("resume", finished)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout == (f"mupctl: already finished at step {STEPS}; extend with `mupctl resume {finished} --set "
                          f"train.steps={2 * STEPS}` (any number above {STEPS})\n")
    res = invoke("resume", finished, "--json")
    got = json.loads(res.stdout)
    assert res.returncode == 0 and got["state"] == "finished" and got["note"].startswith("already finished")
    assert snapshot(finished) == before  # nothing launched: no new event, no state, no metrics row


def test_extending_a_schedule_warns_when_the_lr_jumps_back_up():
    """The warning compares the LR of the next step under the new schedule with the last step's under
    the run's own: a cosine run extended after its floor jumps; a WSD run extended from a checkpoint
    before its decay does not; a constant one never does."""
    from mupctl.launch.extend import schedule_jump
    from mupctl.plan import compile_plan

    def plans(name, steps):
        raw = {"schedule": {"name": name}, "optimizer": {"lr": 1e-3}}
        return [compile_plan(load_recipe(raw=raw | {"train": {"steps": n}})) for n in steps]
    old, new = plans("cosine", (40, 60))
    jump = schedule_jump(old, new, 40, 1e-3)
    assert jump.startswith("train.steps 40 -> 60 stretches the cosine schedule: the LR jumps from 0.10x its peak "
                           "(its floor), 1.0e-04 at step 40, back up to 0.")
    assert "WSD (schedule.name: wsd) is the schedule that extends cleanly" in jump
    old, new = plans("wsd", (40, 60))
    assert schedule_jump(old, new, 30, 1e-3) is None  # stable phase: the same LR on both schedules
    after_decay = schedule_jump(old, new, 40, 1e-3)
    assert "a WSD run extends cleanly only from a checkpoint taken before its decay" in after_decay
    assert schedule_jump(*plans("constant", (40, 60)), 40, 1e-3) is None
    assert schedule_jump(*plans("cosine", (40, 40)), 40, 1e-3) is None


def test_two_resumes_in_a_row_and_a_crash_past_the_restart_limit(references, finished):
    """Resume from step 4, crash after step 9 (no restarts allowed: exit 1 naming train.log), resume
    again from step 8: the losses equal the uninterrupted run's. That last resume's rank 0 dies after
    the last step's checkpoint: the run trained to its end, so it is finished (exit 0), not crashed."""
    for step in (8, 12):
        shutil.rmtree(finished / "checkpoints" / f"step_{step:08d}")
    res = invoke("resume", finished, env={"MUPCTL_FAULT_STEP": str(2 * INTERVAL + 1)})
    assert res.returncode == 1  # the injected crash, no restarts allowed
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("failed: workers exited with code"), res.stderr
    assert "train.log" in res.stderr and "ChildFailedError" in (finished / "train.log").read_text()
    state = json.loads((finished / "state.json").read_text())
    assert state["state"] == "crashed" and state["exit_code"] == 1 and state["step"] == 2 * INTERVAL + 1
    assert state["checkpoint"] == f"checkpoints/step_{2 * INTERVAL:08d}"
    res = invoke("resume", finished, "--json", env={"MUPCTL_FAULT_STEP": str(STEPS)})
    assert res.returncode == 0, res.stdout + res.stderr
    got = json.loads(res.stdout)
    assert got["state"] == "finished" and got["reason"].startswith(f"reached train.steps ({STEPS}), then the workers "
                                                                   "exited with code"), got
    assert starts(finished)[-2:] == [f"resumed at step {INTERVAL}", f"resumed at step {2 * INTERVAL}"]
    assert losses(finished) == losses(references["1rank"])


def test_kill_during_checkpoint_save_keeps_previous(references, tmp_path):
    run = tmp_path / "run"
    res = invoke("train", "--run-dir", run, *BASE, env={"MUPCTL_FAULT_BEFORE_COMMIT": str(2 * INTERVAL)})
    assert res.returncode != 0
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert f"step_{INTERVAL:08d}" in ckpts and f"step_{2 * INTERVAL:08d}" not in ckpts
    assert any(name.startswith(".tmp-") for name in ckpts)  # the half-written save
    res = invoke("resume", run)
    assert res.returncode == 0, res.stdout + res.stderr
    assert starts(run)[-1] == f"resumed at step {INTERVAL}"
    assert losses(run) == losses(references["1rank"])


def test_corrupt_newest_checkpoint_falls_back(references, finished):
    newest = finished / "checkpoints" / f"step_{STEPS:08d}"
    shard = next(newest.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])
    res = run_cli("resume", finished)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"checkpoint step_{STEPS:08d} is unreadable" in res.stderr
    assert f"resumed at step {2 * INTERVAL}" in res.stdout
    assert losses(finished) == losses(references["1rank"])


def test_injected_crash_restarts_and_matches(references, tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", "--run-dir", run, *BASE, *LAYOUTS["2ranks-ddp"], "--max-restarts", "1",
                  env={"MUPCTL_FAULT_STEP": str(INTERVAL + 2)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "restart 1/1" in res.stdout and "restarted 1 time" in res.stdout
    assert losses(run) == losses(references["2ranks-ddp"])


def test_changed_width_needs_force(finished):
    res = invoke("resume", finished, "--set", "model.d_model=64")
    assert res.returncode == 2 and "model.d_model" in res.stderr and "--force" in res.stderr
    assert json.loads((finished / "plan.json").read_text())["model"]["d_model"] == 128  # nothing rewritten
    res = run_cli("resume", finished, "--set", "model.d_model=64", "--set", f"train.steps={STEPS + 2}", "--force")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed at step {STEPS} with fresh weights" in res.stdout
    assert "resume changes model.d_model: 128 -> 64" in res.stdout
    assert f"resume changes train.steps: {STEPS} -> {STEPS + 2}" in res.stdout
    assert max(losses(finished)) == STEPS + 2
    assert json.loads((finished / "plan.json").read_text())["model"]["d_model"] == 64


def test_divergence_exits_1_without_checkpoint(tmp_path):
    run = tmp_path / "run"
    res = invoke("train", "--run-dir", run, *BASE, "--set", "optimizer.lr=1e6", "--set", "train.grad_clip=0",
                 "--set", "checkpoint.interval=1", "--set", "model.init_std=10")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("failed: non-finite loss"), res.stderr
    diverged = json.loads((run / "DIVERGED.json").read_text())
    saved = [int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*")] \
        if (run / "checkpoints").exists() else []
    assert all(s < diverged["step"] for s in saved)
    again = "then resume from the last checkpoint" if saved else "no checkpoint: a resume starts over"
    assert diverged["message"].endswith(f"; {again})") and again in res.stderr
    state = json.loads((run / "state.json").read_text())
    assert (state["state"], state["step"], state["exit_code"]) == ("diverged", diverged["step"], 1)


def test_sigterm_stops_cleanly_then_resume_is_exact(references, tmp_path):
    """SIGTERM to `mupctl train` (a preemption): the workers stop at a step boundary, checkpoint,
    the launcher exits 1 saying how to resume, and the resumed run equals the uninterrupted one."""
    run = tmp_path / "run"
    args = BASE + ["--set", "checkpoint.interval=1000"]  # only the stop checkpoint
    proc = subprocess.Popen([sys.executable, "-m", "mupctl", "train", "--run-dir", str(run), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and 3 in losses(run)):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "stopped by SIGTERM" in err and "mupctl resume" in err, out + err
    saved = [p.name for p in (run / "checkpoints").glob("step_*")]
    assert len(saved) == 1 and int(saved[0].split("_")[1]) < STEPS
    res = invoke("resume", run)
    assert res.returncode == 0, res.stdout + res.stderr
    assert losses(run) == losses(references["1rank"])


def snapshot(run_dir):
    """Every file of a run directory with its bytes (what a refused command must leave alone)."""
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resume_refuses_a_damaged_run_dir_before_writing(finished):
    run = finished
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    plan = json.loads((run / "plan.json").read_text())

    def edited(section, key, value):  # recipe.yaml edited by hand in a field that breaks exactness
        return yaml.safe_dump(recipe | {section: recipe[section] | {key: value}}).encode()
    cases = [  # file, damage, expected words in the one-line error
        ("plan.json", b"x{", "plan.json is damaged"),
        ("plan.json", json.dumps(plan | {"version": 1}).encode(), "version-1 plan"),
        ("recipe.yaml", b"name: other\n", "model.seq_len: recipe.yaml was edited after the run started (64 -> 256)"),
        ("recipe.yaml", b"", "the recipe is empty"),
        ("recipe.yaml", edited("train", "seed", 7), "train.seed: recipe.yaml was edited after the run started (0 -> 7)"),
        ("recipe.yaml", edited("data", "source", "synthetic"), "data.source: recipe.yaml was edited"),
        ("recipe.yaml", edited("schedule", "name", "constant"), "schedule.name: recipe.yaml was edited"),
        ("recipe.yaml", edited("train", "grad_clip", 0.5), "train.grad_clip: recipe.yaml was edited"),
    ]
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    cases += [(c.relative_to(run) / "meta.json", b"{}", "step is None, not this checkpoint's step") for c in ckpts]
    cases += [(c.relative_to(run) / "rng" / "rank0.pt", None, "missing rng/rank0.pt") for c in ckpts]
    for name, damage, needle in cases:  # every checkpoint's file damaged at once, the others one at a time
        group = [n for n, _, w in cases if w == needle]
        goods = {n: (run / n).read_bytes() for n in group}
        for n in group:
            (run / n).unlink() if damage is None else (run / n).write_bytes(damage)
        before = snapshot(run)
        res = invoke("resume", run, "--set", f"train.steps={STEPS + 1}")
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert snapshot(run) == before
        for n, good in goods.items():
            (run / n).write_bytes(good)
    (run / "checkpoints").rename(run / "ckpts")  # the checkpoint directory replaced by a file
    (run / "checkpoints").write_text("x")
    before = snapshot(run)
    res = invoke("resume", run)
    assert res.returncode == 2 and "checkpoints is a file" in res.stderr, res.stderr
    assert snapshot(run) == before
    (run / "checkpoints").unlink()
    (run / "ckpts").rename(run / "checkpoints")
    for shard in (run / "checkpoints").glob("step_*/*.distcp"):  # every checkpoint torn
        shard.write_bytes(shard.read_bytes()[:100])
    before = snapshot(run)
    res = invoke("resume", run, "--set", f"train.steps={STEPS + 1}")
    assert res.returncode == 2 and "no readable checkpoint" in res.stderr and "bytes" in res.stderr, res.stderr
    assert snapshot(run) == before


def test_hand_edits_of_recipe_yaml_resume_or_need_force(references, finished):
    """recipe.yaml edited by hand in a field that keeps exactness (train.steps) counts as --set: the
    resume runs to the new step count and plan.json follows, recipe.yaml (no --set) stays as written.
    An edit that breaks exactness (train.seed) is refused (above) unless --force accepts it, and a forced
    new LR is the one the resumed steps train at (the checkpoint's param groups do not override the plan)."""
    run = finished
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe | {"train": recipe["train"] | {"steps": STEPS + 2}})
                                     + "# the user's note\n")
    res = invoke("resume", run)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"train.steps {STEPS} -> {STEPS + 2} stretches the cosine schedule: the LR jumps from 0.10x its peak " \
           "(its floor)" in res.stderr
    assert "WSD (schedule.name: wsd) is the schedule that extends cleanly" in res.stderr
    assert (run / "recipe.yaml").read_text().endswith("# the user's note\n")  # no --set: left as written
    plan = json.loads((run / "plan.json").read_text())
    assert plan["train"]["steps"] == plan["schedule"]["steps"] == STEPS + 2
    assert sorted(losses(run)) == list(range(1, STEPS + 3))
    assert {s: v for s, v in losses(run).items() if s <= STEPS} == losses(references["1rank"])
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe | {"train": recipe["train"] | {"seed": 7}}))
    assert invoke("resume", run).returncode == 2
    res = invoke("resume", run, "--force", "--set", f"train.steps={STEPS + 3}",  # a finished run: only if extended
                 "--set", "optimizer.lr=1e-4", "--set", "schedule.name=constant")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resume changes train.seed: 0 -> 7" in res.stdout
    assert json.loads((run / "plan.json").read_text())["train"]["seed"] == 7
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if r["step"] == STEPS + 3 and "lr" in r] == [1e-4]  # the new LR, not the saved one


def test_resume_refuses_a_run_dir_in_use(finished):
    """Every other resume here starts with the finished run's .lock file on disk (its process gone):
    only a held lock refuses, and it is free again once its holder closes it."""
    import fcntl
    with open(finished / ".lock", "a+") as held:  # what a live `mupctl train`/`resume` holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = invoke("resume", finished)
        assert res.returncode == 2 and "in use" in res.stderr, res.stderr
    lock_run_dir(finished, load_recipe(finished / "recipe.yaml")).close()


def test_torn_metrics_line_and_fresh_restart_keep_one_row_per_step(finished):
    """A crash mid-write leaves half a line in metrics.jsonl, and a run with no checkpoint yet restarts
    from step 0: the resumed file still has exactly one row per step. (The finished run made into one
    that crashed at step 3: no checkpoints, no state.json, the rows after step 2, then a torn one.)"""
    for ckpt in (finished / "checkpoints").glob("step_*"):
        shutil.rmtree(ckpt)
    (finished / "state.json").unlink()
    rows = (finished / "metrics.jsonl").read_text().splitlines()
    (finished / "metrics.jsonl").write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] <= 2))
    with (finished / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')
    res = invoke("resume", finished, "--set", "train.eval_interval=1000")
    assert res.returncode == 0, res.stdout + res.stderr
    assert starts(finished)[-1] == "fresh"
    rows = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, STEPS]  # step 0 evaluated once
    assert sorted(losses(finished)) == list(range(1, STEPS + 1))


SIGNALS = {"SIGTERM": (signal.SIGTERM, False), "SIGINT": (signal.SIGINT, False),
           "SIGINT-to-group": (signal.SIGINT, True)}


@pytest.fixture(scope="module")
def signalled(tmp_path_factory):
    """One endless run per SIGNALS entry, all at once; each gets its signal ~3 s after its worker
    started (past the step-time probe, steps 5-10): {name: (run dir, seconds from the signal to the
    launcher's exit, returncode, stdout, stderr)}."""
    root = tmp_path_factory.mktemp("signalled")
    args = BASE + ["--set", "train.steps=100000", "--set", "train.log_interval=100000",
                   "--set", "checkpoint.interval=100000"]
    procs = {name: subprocess.Popen([sys.executable, "-m", "mupctl", "train", "--run-dir", str(root / name), *args],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True) for name in SIGNALS}
    out = {}
    try:
        for name in SIGNALS:
            deadline = time.time() + 120
            log = root / name / "train.log"
            while time.time() < deadline and "mupctl worker:" not in (log.read_text() if log.exists() else ""):
                time.sleep(0.05)
        time.sleep(3)
        sent = {}
        for name, (signum, group) in SIGNALS.items():
            sent[name] = time.time()
            os.killpg(procs[name].pid, signum) if group else procs[name].send_signal(signum)
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=60)
            out[name] = (root / name, time.time() - sent[name], proc.returncode, stdout, stderr)
    finally:  # a launcher that ignored the signal would train on for 100000 steps
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return out


@pytest.mark.parametrize("name", list(SIGNALS))
def test_stop_signal_between_log_steps_stops_within_seconds(signalled, name):
    """With no log or checkpoint step in sight, the workers still check for a stop every ~2 s, so a
    SIGTERM or SIGINT is answered (with a checkpoint) long before torchrun's 30 s grace runs out:
    sent to the launcher alone (`kill -INT PID`) or to its process group (a terminal's Ctrl-C), it
    reaches torchrun exactly once (a second SIGINT would kill the workers before they save)."""
    run, seconds, code, stdout, stderr = signalled[name]
    signame = signal.Signals(SIGNALS[name][0]).name
    assert code == 1 and stderr.startswith(f"failed: stopped by {signame} after step "), stderr
    assert stderr.count("\n") == 1 and "checkpoint saved there" in stderr  # one line, torchrun's text in train.log
    assert "SignalException" in (run / "train.log").read_text()
    assert "mupctl: stopped at step " in stdout and str(run) in stdout.splitlines()[-1]
    assert seconds < 25
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    stop, end = events[-2:]
    assert stop["event"] == "stop" and 10 < stop["step"] < 100000
    assert end["event"] == "end" and end["state"] == "stopped" and end["step"] == stop["step"], end
    assert end["checkpoint"] == f"checkpoints/step_{stop['step']:08d}" and end["exit_code"] == 1
    assert [e["event"] for e in events].count("failed") == 0, events
    assert (run / "checkpoints" / f"step_{stop['step']:08d}" / "COMMITTED").is_file()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_its_killed_parent():
    """torchrun (and a sweep's cell) runs in its own session, so a Ctrl-C reaches it once, through its
    parent; in return it gets SIGKILL when the parent dies, whatever killed it (launch.child)."""
    code = ("import os, subprocess, time; from mupctl.launch.child import child_setup; "
            "p = subprocess.Popen(['sleep', '60'], start_new_session=True, preexec_fn=child_setup(os.getpid())); "
            "print(p.pid, flush=True); time.sleep(60)")
    launcher = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(launcher.stdout.readline())
    assert alive(child)
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 5
    while time.time() < deadline and alive(child):
        time.sleep(0.05)
    assert not alive(child), "the child of a SIGKILLed launcher lives on"


def test_the_launcher_notes_stop_signals_and_passes_them_on_once_it_has_a_child():
    """`Stops`: inside it a SIGINT or SIGTERM does not stop this process; one that came before torchrun
    existed reaches it as SIGTERM on `attach`, later ones as they come; after the child's exit, nothing."""
    from mupctl.launch.supervise import Stops
    with Stops() as stops:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        child = subprocess.Popen(["sleep", "60"])
        stops.attach(child)
        assert child.wait(timeout=10) == -signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # the child is gone: only noted
    assert stops.received == [signal.SIGINT, signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the old handlers are back


def test_a_worker_treats_a_zombie_launcher_as_dead():
    """A SIGKILLed launcher stays a zombie until its parent reaps it, and a parent that reads the run's
    output reaps it only after every writer of the pipe, the workers included, has exited: a worker
    that waited for the PID to vanish would train on (launch.child.die_with_parent and running)."""
    zombie = subprocess.Popen(["true"])
    deadline = time.time() + 10
    while time.time() < deadline and alive(zombie.pid):  # exited, not yet reaped: a zombie
        time.sleep(0.02)
    assert Path(f"/proc/{zombie.pid}").exists()
    code = "import time; from mupctl.launch.child import die_with_parent; die_with_parent(); time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                              env=dict(os.environ, MUPCTL_LAUNCHER_PID=str(zombie.pid)))
    try:
        assert worker.wait(timeout=45) == -signal.SIGKILL
    finally:
        worker.kill()
        zombie.wait()
