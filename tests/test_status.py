"""`mupctl status` and the run state on disk, in process: run directories whose state.json (or its
absence) says one thing and whose launcher says another. The real transitions (finished, stopped by
a signal, killed by SIGKILL, diverged) are checked on real runs in test_train.py and test_resume.py;
here one finished run (made once) is copied and edited into each case."""

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, invoke, run_cli
from mupctl.run_state import HEARTBEAT_S, STALE_S, STATES, launch_fields, read_state, record_orphaned, write_state

SMALL = ["--set", "model.seq_len=64", "--set", "train.global_batch=8", "--set", "train.micro_batch=4",
         "--set", "train.log_interval=2", "--set", "train.eval_interval=4", "--set", "checkpoint.interval=4",
         "--set", "train.telemetry_interval=0", "--set", "train.steps=8", "--set", "launch.device=cpu"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 8-step run (checkpoints at 4 and 8) and its `train --json` result. Its launcher gets a
    SIGINT after torchrun has exited (faults.after_workers): that must change nothing (test below)."""
    run = tmp_path_factory.mktemp("status") / "run"
    res = run_cli("train", "--run-dir", run, *SMALL, "--json", env={"MUPCTL_FAULT_LATE_SIGNAL": "INT"})
    assert res.returncode == 0, res.stdout + res.stderr
    return run, res


@pytest.fixture
def run(done, tmp_path):
    return shutil.copytree(done[0], tmp_path / "run")


def status(run_dir):
    res = invoke("status", run_dir, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_train_json_is_one_object_and_status_reads_the_same_run(done):
    """Also: the SIGINT that reached the launcher after the workers finished (the fixture) neither stops
    it nor keeps it from recording the end: exit 0, `finished`, an `end` row."""
    run, res = done
    result = json.loads(res.stdout)  # one object: anything else on stdout would not parse
    assert res.stderr == ""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in rows if "loss" in r][-1]
    assert result["run_dir"] == str(run) and result["state"] == "finished" and result["step"] == 8
    assert result["loss"] == last_train["loss"]
    assert result["val_loss"] == [r for r in rows if "val_loss" in r][-1]["val_loss"]
    assert result["checkpoint"] == str(run / "checkpoints" / "step_00000008") and result["exit_code"] == 0
    assert result["seconds"] > 0 and result["alive"] is False
    assert status(run) == {k: v for k, v in result.items() if k != "seconds"}
    assert all(isinstance(r["time"], float) for r in rows)  # wall-clock time in every metrics row
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    state = read_state(run)
    assert state["state"] == "finished" and state["checkpoint"] == "checkpoints/step_00000008"
    assert state["command"][:4] == ["mupctl", "train", "--run-dir", str(run)] and state["mupctl_version"]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["launch", "start", "end"]
    assert events[0]["command"] == state["command"] and events[-1]["state"] == "finished"
    text = invoke("status", run).stdout
    assert "finished (not running)" in text and "exit 0: reached train.steps (8)" in text


def test_a_running_state_whose_launcher_is_gone_is_crashed(run):
    """Nobody could write the end (the machine died): the pid is dead, or on another host the heartbeat
    is stale. A live pid of a mupctl process, or a fresh heartbeat, is alive and has an ETA."""
    base = read_state(run)
    shutil.rmtree(run / "checkpoints" / "step_00000008")  # it died before its last checkpoint
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_state(run, base | launch_fields(4, 8, ["mupctl", "train"]) | {"pid": dead.pid})
    got = status(run)
    assert got["state"] == "crashed" and not got["alive"] and f"mupctl pid {dead.pid}" in got["reason"]
    assert got["eta_s"] is None and got["exit_code"] is None
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= 4))
    t2, t4 = (next(r["time"] for r in rows if r["step"] == s and "loss" in r) for s in (2, 4))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mupctl"])  # a mupctl-like argv
    try:
        write_state(run, base | launch_fields(4, 8, ["mupctl", "train"]) | {"pid": live.pid, "started": 0.0})
        got = status(run)
        assert got["state"] == "running" and got["alive"] and got["reason"] is None and got["step"] == 4
        assert got["eta_s"] == pytest.approx(4 * (t4 - t2) / 2)  # 4 steps to go at the pace of steps 2-4
    finally:
        live.kill()
        live.wait()
    not_mupctl = subprocess.Popen(["sleep", "60"])  # a live pid that is not mupctl: a reused pid
    try:
        write_state(run, base | launch_fields(4, 8, []) | {"pid": not_mupctl.pid})
        assert status(run)["state"] == "crashed"
    finally:
        not_mupctl.kill()
        not_mupctl.wait()
    elsewhere = base | launch_fields(4, 8, []) | {"host": socket.gethostname() + "-other"}
    write_state(run, elsewhere | {"heartbeat": time.time() - STALE_S - 1})
    assert status(run)["state"] == "crashed"
    write_state(run, elsewhere | {"heartbeat": time.time() - HEARTBEAT_S})
    assert status(run)["alive"]


def test_a_killed_launchers_worker_records_the_crash_unless_the_run_moved_on(run):
    """`record_orphaned`: what rank 0 writes when its launcher died; not when a new launcher owns the run."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_state(run, launch_fields(8, 8, ["mupctl", "resume"]) | {"pid": dead.pid})
    record_orphaned(run, dead.pid + 1)  # another launcher's worker: not its run
    assert read_state(run)["state"] == "running"
    record_orphaned(run, dead.pid)
    state = read_state(run)
    assert state["state"] == "crashed" and state["exit_code"] is None and state["step"] == 8
    assert f"the launcher (mupctl pid {dead.pid}) was killed after step 8" in state["reason"]
    assert json.loads((run / "events.jsonl").read_text().splitlines()[-1])["state"] == "crashed"


def test_a_run_whose_launcher_ended_after_the_last_checkpoint_is_finished(run):
    """A signal or SIGKILL that reaches the launcher after the workers saved step train.steps leaves a
    `stopped` or `crashed` record; the run is trained to its end, so status says finished and resume has
    nothing to do (exit 0). Without that checkpoint the record stands and resume continues from step 4."""
    base = read_state(run)
    for state in ("stopped", "crashed"):
        write_state(run, base | {"state": state, "exit_code": 1, "reason": "stopped by SIGTERM after step 8"})
        got = status(run)
        assert got["state"] == "finished" and got["step"] == 8, got
        assert got["reason"] == ("reached train.steps (8); the launcher ended as the workers finished, before it "
                                 f"could record that (it says {state})")
    res = invoke("resume", run)
    assert res.returncode == 0 and res.stdout.startswith("mupctl: already finished at step 8"), res.stdout + res.stderr
    shutil.rmtree(run / "checkpoints" / "step_00000008")
    got = status(run)
    assert got["state"] == "crashed" and got["checkpoint"].endswith("step_00000004")


def test_run_directories_without_a_state_file_are_read_as_well_as_they_can_be(run):
    (run / "state.json").unlink()
    got = status(run)
    assert got["state"] == "finished" and not got["recorded"] and got["step"] == 8
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] <= 5))
    shutil.rmtree(run / "checkpoints" / "step_00000008")  # a run that ended after step 5
    got = status(run)
    assert got["state"] == "crashed" and "no recorded end" in got["reason"] and got["step"] == 4
    with (run / "events.jsonl").open("a") as f:
        f.write(json.dumps({"event": "stop", "step": 5, "checkpoint": True}) + "\n")
    assert status(run)["state"] == "stopped"
    (run / "DIVERGED.json").write_text(json.dumps({"step": 5, "message": "non-finite loss by step 5"}))
    got = status(run)
    assert got["state"] == "diverged" and got["reason"] == "non-finite loss by step 5"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mupctl"])
    try:
        (run / ".lock").write_text(f"mupctl pid {holder.pid}\n")
        got = status(run)
        assert got["state"] == "running" and got["alive"]
    finally:
        holder.kill()
        holder.wait()


def test_status_of_something_that_is_not_a_run_exits_2(tmp_path):
    res = invoke("status", tmp_path)
    assert res.returncode == 2 and "RUN_DIR" in res.stderr and "not a mupctl run directory" in res.stderr
    assert not list(tmp_path.iterdir())


def test_state_names_are_documented():
    text = (ROOT / "docs" / "training.md").read_text()
    for state in STATES:
        assert f"| `{state}` |" in text, state


def test_the_recorded_end_keeps_the_last_heartbeat(run, monkeypatch):
    """`heartbeat` writes its time into the launch's state too, so the end recorded on it keeps it."""
    from mupctl.launch import supervise
    monkeypatch.setattr(supervise, "HEARTBEAT_S", 0.05)
    base = write_state(run, launch_fields(8, 8, ["mupctl", "train"]))
    with supervise.heartbeat(run, base):
        time.sleep(0.3)
    assert base["heartbeat"] > base["started"] and read_state(run)["heartbeat"] == base["heartbeat"]
