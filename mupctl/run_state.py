"""A run's state on disk: `RUN_DIR/state.json`, one JSON object replaced atomically (`paths.atomic_write`)
at every transition, and an `end` row in `events.jsonl` for every end (docs/training.md, "Run state").

States (`STATES`): `running`, then one end: `finished` (train.steps reached), `stopped` (SIGINT/SIGTERM),
`diverged` (DIVERGED.json) or `crashed` (anything else: workers failed past their restarts, the launcher
failed, or the launcher died). Who writes what:
- the launcher that owns the run (`mupctl train`, or `resume`; of a multi-node job, the node that created
  the run) writes `running` before torchrun starts, a `heartbeat` time every HEARTBEAT_S while it runs,
  and the end once torchrun has exited;
- a launcher killed by SIGKILL writes nothing: its torchrun dies with it (launch.child) and rank 0's worker,
  which notices within 0.1 s (`die_with_parent`), records `crashed` under the run lock before it exits
  (`record_orphaned`). If nobody could write (the whole machine died), `state.json` still says `running`
  and `alive` (below) tells the truth: the launcher's pid is gone, or its heartbeat is stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from mupctl import __version__
from mupctl.paths import atomic_write

STATE_FILE = "state.json"
RUNNING, FINISHED, STOPPED, CRASHED, DIVERGED = STATES = ("running", "finished", "stopped", "crashed", "diverged")
HEARTBEAT_S = 10.0
STALE_S = 3 * HEARTBEAT_S  # a launcher on another host is taken for dead past this heartbeat age
LOCK_WAIT_S = 2.0  # a SIGKILLed launcher shows as a zombie before its last thread has let go of the run lock


def read_state(run_dir: Path) -> dict | None:
    """The run's state.json, or None (absent: a run made before mupctl recorded state; or unreadable)."""
    try:
        state = json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("state") in STATES else None


def write_state(run_dir: Path, fields: dict) -> dict:
    """Replace state.json with `fields` plus `updated` (now); returns what was written."""
    state = fields | {"updated": time.time()}
    atomic_write(Path(run_dir) / STATE_FILE, json.dumps(state, indent=1) + "\n")
    return state


def append_event(run_dir: Path, **fields) -> None:
    """Append one row to events.jsonl (the workers' start/stop/failed rows, the launcher's launch/end rows)."""
    with (Path(run_dir) / "events.jsonl").open("a") as f:
        f.write(json.dumps(fields | {"time": time.time()}) + "\n")


def checkpoint_name(step: int | None) -> str | None:
    """A checkpoint as the run directory names it, relative to RUN_DIR (survives a copy of the run)."""
    return None if step is None else f"checkpoints/step_{step:08d}"


def newest_checkpoint(run_dir: Path) -> int | None:
    """The step of the newest checkpoint that passes `checkpoint.file_problem` (the one a resume loads)."""
    from mupctl.checkpoint import readable_steps
    for _ in range(3):  # a checkpoint purged while we read it: look again
        try:
            good, _bad = readable_steps(Path(run_dir) / "checkpoints")
            return max(good, default=None)
        except OSError:
            time.sleep(0.05)
    return None


def trained_to_end(steps: int, interval: int, checkpoint: int | None, rows: list[dict]) -> bool:
    """Whether the workers completed all `steps`, whatever the launcher recorded (a signal or a SIGKILL
    can reach it after the last step): with checkpointing on (`interval` > 0) the newest whole
    checkpoint is at `steps`, so a resume has nothing left to train; with it off, metrics.jsonl's
    `rows` hold the train row of step `steps`."""
    if interval > 0:
        return checkpoint == steps
    return any(r.get("step") == steps and "loss" in r for r in rows)


def launch_fields(checkpoint: int | None, total: int, command: list[str]) -> dict:
    """state.json of a launch that starts now from `checkpoint` (a step, or None): `running`, who runs it,
    with which mupctl and command line."""
    now = time.time()
    return {"state": RUNNING, "step": checkpoint or 0, "total_steps": total, "checkpoint": checkpoint_name(checkpoint),
            "exit_code": None, "reason": None, "pid": os.getpid(), "host": socket.gethostname(), "started": now,
            "heartbeat": now, "mupctl_version": __version__, "command": list(command)}


def record_end(run_dir: Path, base: dict, state: str, step: int, exit_code: int | None, reason: str,
               checkpoint: int | None) -> dict:
    """Write an end (`state` one of STATES[1:]) over the launch's state `base` and add its events.jsonl row;
    `checkpoint`: the newest readable checkpoint's step (`newest_checkpoint`), None without one."""
    assert state in STATES[1:], state
    end = {"state": state, "step": step, "total_steps": base.get("total_steps"),
           "checkpoint": checkpoint_name(checkpoint), "exit_code": exit_code, "reason": reason}
    written = write_state(run_dir, base | end | {"ended": time.time()})
    append_event(run_dir, event="end", **end)
    return written


def pid_alive(pid: int) -> bool:
    """Process `pid` of this host runs (a zombie counts as dead) and is a mupctl process (PIDs get reused)."""
    from mupctl.launch.child import running
    if not running(pid):
        return False
    try:
        return b"mupctl" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile, or no /proc: existence is all there is to tell
        return running(pid)


def launcher_alive(state: dict) -> bool:
    """Whether the launcher recorded in a `running` state is alive: on this host, its pid; on another
    (a shared file system, a multi-node job), a heartbeat younger than STALE_S."""
    if state.get("state") != RUNNING:
        return False
    if state.get("host") == socket.gethostname() and isinstance(state.get("pid"), int):
        return pid_alive(state["pid"])
    return time.time() - float(state.get("heartbeat") or 0) < STALE_S


def lock_holder(run_dir: Path) -> int | None:
    """The pid written in RUN_DIR/.lock (`mupctl pid N`) when that process still runs on this host."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((Path(run_dir) / ".lock").read_text().split()[-1])
        return pid if pid_alive(pid) else None
    return None


def read_diverged(run_dir: Path) -> dict | None:
    """DIVERGED.json's `step` (an int) and `message`, the worker's record of a non-finite loss; None when
    it is absent, torn by a crash, or not such a record."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        diverged = json.loads((Path(run_dir) / "DIVERGED.json").read_text())
        return {"step": int(diverged["step"]), "message": diverged["message"]}
    return None


def logged_step(run_dir: Path) -> int:
    """The last step metrics.jsonl has a row for (0 when none)."""
    from mupctl.metrics import read_jsonl
    return max((r["step"] for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if type(r.get("step")) is int),
               default=0)


def take_lock(f, wait_s: float) -> None:
    """flock `f` exclusively, trying for up to `wait_s` (BlockingIOError past it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def record_orphaned(run_dir: Path, launcher_pid: int) -> None:
    """A worker's last words when its launcher died (a `kill -9`): record `crashed` if state.json is still
    the running state of that launcher, on this host, and the run lock is free (a new `mupctl resume` that
    took it owns the run now). Every node's local rank 0 calls it; the one beside the owner writes."""
    try:
        with open(Path(run_dir) / ".lock", "a+") as lock:
            take_lock(lock, LOCK_WAIT_S)
            base = read_state(run_dir) or {}
            if (base.get("state"), base.get("pid"), base.get("host")) != (RUNNING, launcher_pid, socket.gethostname()):
                return
            step = logged_step(run_dir)
            record_end(run_dir, base, CRASHED, step, None,
                       f"the launcher (mupctl pid {launcher_pid}) was killed after step {step} and its workers "
                       f"stopped with it; continue with `mupctl resume {Path(run_dir).resolve()}`",
                       newest_checkpoint(run_dir))
    except Exception:  # noqa: BLE001 - last words are best effort: `status` still finds the launcher gone
        pass
