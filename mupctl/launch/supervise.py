"""Run the workers of one launch and record how it ended (`run_state`).

torchrun runs in its own session and dies with the launcher (launch.child); the launcher passes each
SIGINT and SIGTERM it receives on to it exactly once, as SIGTERM (torchrun treats both alike, and a
SIGINT in torchrun's own startup prints a traceback): a Ctrl-C, a `kill -INT` of the launcher and a
signal to its process group take the same path. From the launch's `running` state until its end is
recorded, such a signal never stops the launcher itself (`Stops`): one that comes after torchrun has
exited is only noted, so the end is always written. torchrun's stdout (the workers' lines) is shown by
`display.Display`; its stderr (its own logs and tracebacks, the workers' stderr) goes to train.log.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mupctl import faults
from mupctl.errors import one_line
from mupctl.launch.child import STOP_SIGNALS, spawn
from mupctl.launch.command import torchrun_argv
from mupctl.launch.display import Display, pump
from mupctl.metrics import read_jsonl
from mupctl.run_state import (CRASHED, DIVERGED, FINISHED, HEARTBEAT_S, STOPPED, append_event, launch_fields,
                              logged_step, newest_checkpoint, read_diverged, record_end, trained_to_end,
                              write_state)


@dataclass
class End:
    """How a launch ended: a state of `run_state.STATES[1:]`, the step, the launcher's exit code, why."""
    state: str
    step: int
    exit_code: int
    reason: str


def run_workers(run_dir: Path, plan, command: list[str], display: Display, owner: bool = True,
                checkpoint: int | None = None) -> dict:
    """Run torchrun for `plan` in `run_dir` and return `status.run_status` of the run afterwards, plus the
    launch's `seconds`. `owner`: this launcher records the run's state (not a node joining a multi-node run);
    `checkpoint`: the step the workers continue from (a resume's newest valid checkpoint; None for a new run),
    passed in so that the launcher reads no checkpoint (and imports no torch) before torchrun starts."""
    from mupctl.status import run_status
    argv = torchrun_argv(plan, run_dir)
    base = write_state(run_dir, launch_fields(checkpoint, plan.train.steps, command)) if owner else None
    if owner:
        append_event(run_dir, event="launch", command=base["command"], mupctl_version=base["mupctl_version"],
                     pid=base["pid"], host=base["host"])
    display.start()
    start = time.monotonic()
    newest = functools.cache(functools.partial(newest_checkpoint, run_dir))  # one scan, once the workers are gone
    with Stops() as stops:
        try:
            display.note(f"mupctl: launching {shlex.join(argv)}")
            seen = len(read_jsonl(run_dir / "events.jsonl"))  # events of earlier launches are not this one's
            with heartbeat(run_dir, base):
                rc = supervise(argv, display, stops)
            faults.after_workers()
            events = read_jsonl(run_dir / "events.jsonl")[seen:]
            end = judge(run_dir, plan, rc, stops.received, events, newest, display)
        except BaseException as exc:
            end = End(CRASHED, logged_step(run_dir), 1, one_line(f"the launcher failed: {type(exc).__name__}: {exc}"))
            raise
        finally:
            display.close()
            ckpt = newest()  # the recorded end and the status returned read the same scan
            if owner:
                record_end(run_dir, base, end.state, end.step, end.exit_code, end.reason, ckpt)
    return run_status(run_dir, checkpoint=ckpt) | {"seconds": round(time.monotonic() - start, 1),
                                  **({} if owner else {"state": end.state, "reason": end.reason})}


class Stops:
    """While the `with` block runs, SIGINT and SIGTERM are noted in `received` and passed on to the
    `child` (torchrun), once each and as SIGTERM, while it runs, instead of stopping this process."""

    def __init__(self):
        self.received: list[int] = []
        self.child: subprocess.Popen | None = None

    def __enter__(self) -> "Stops":
        self._old = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        self.received.append(signum)
        if self.child is not None:
            self.child.send_signal(signal.SIGTERM)  # a no-op once the child has been reaped

    def attach(self, child: subprocess.Popen) -> None:
        """Forward to `child` from now on, and at once if a signal came before it existed."""
        self.child = child
        if self.received:
            child.send_signal(signal.SIGTERM)


def supervise(argv: list[str], display: Display, stops: Stops) -> int:
    """Start torchrun under `stops` (which passes stop signals on), wait; its exit code."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MUPCTL_LAUNCHER_PID=str(os.getpid()))  # worker.die_with_parent
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # held until `stops` can forward them
    try:
        proc = spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        stops.attach(proc)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    pumps = [pump(proc.stdout, display.worker_line), pump(proc.stderr, display.torchrun_line)]
    rc = proc.wait()
    for thread in pumps:  # the pipes close once the workers, which follow torchrun within 0.1 s, are gone too
        thread.join(timeout=10)
    return rc


@contextlib.contextmanager
def heartbeat(run_dir: Path, base: dict | None):
    """While the block runs, rewrite state.json's `heartbeat` every HEARTBEAT_S (nothing when `base` is None),
    also into `base`, which the end is recorded on."""
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                base["heartbeat"] = time.time()
                write_state(run_dir, base)

    thread = threading.Thread(target=beat, daemon=True, name="heartbeat")
    if base is not None:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if base is not None:
            thread.join()


def judge(run_dir: Path, plan, rc: int, received: list[int], events: list[dict], newest, display: Display) -> End:
    """The end of a launch from torchrun's exit code, the signals the launcher got, the workers' events and,
    where the workers did not simply finish, `newest()`: the step of the newest whole checkpoint."""
    restarts = max((e.get("restart", 0) for e in events if e.get("event") == "start"), default=0)
    limit = plan.launch.max_restarts
    if restarts:
        display.note(f"mupctl: workers were restarted {restarts} time(s) (limit {limit})")
    stop = events[-1] if events and events[-1].get("event") == "stop" else None
    steps = plan.train.steps
    by = signal.Signals(received[0]).name if received else "a signal to the workers"
    if rc == 0 and not stop:
        return End(FINISHED, steps, 0, f"reached train.steps ({steps})")
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if trained_to_end(steps, plan.checkpoint.interval, newest(), rows):  # a late signal or crash
        late = by if received or stop else f"the workers exited with code {rc}"
        return End(FINISHED, steps, 0, f"reached train.steps ({steps}), then {late} as the workers finished")
    if stop or received:
        if stop and stop.get("checkpoint"):
            why = f"checkpoint saved there: continue with `mupctl resume {run_dir}`"
        elif stop:
            why = f"no checkpoint: checkpoint.interval is 0; `mupctl resume {run_dir}` starts it over"
        else:
            why = (f"before the workers reached a step boundary; `mupctl resume {run_dir}` continues from the "
                   "newest checkpoint")
        step = stop["step"] if stop else logged_step(run_dir)
        return End(STOPPED, step, 1, f"stopped by {by} after step {step}, {why}" if stop else f"stopped by {by} {why}")
    log = f"log: {run_dir / 'train.log'}"
    diverged = read_diverged(run_dir)
    if diverged is not None:
        return End(DIVERGED, diverged["step"], 1, f"{diverged['message']}; {log}")
    reasons = [e["message"] for e in events if e.get("event") == "failed" and e.get("message")]
    why = reasons[-1] if reasons else f"workers exited with code {rc} after {restarts} restart(s) (limit {limit})"
    return End(CRASHED, logged_step(run_dir), 1, one_line(f"{why}; {log}"))
