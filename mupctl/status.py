"""`mupctl status RUN_DIR`: what a run directory says about its run, for people and agents.

Read only. The state comes from state.json (`run_state`), checked against the living: a `running` state
whose launcher is gone (dead pid, stale heartbeat) is reported as `crashed`. A run directory made before
state.json existed is read as well as it can be: the run lock's pid, DIVERGED.json, the last events.jsonl
row, and whether metrics.jsonl reached train.steps. Progress comes from metrics.jsonl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mupctl.errors import UserError
from mupctl.metrics import read_jsonl
from mupctl.run_state import (CRASHED, DIVERGED, FINISHED, RUNNING, STOPPED, checkpoint_name, launcher_alive,
                              lock_holder, newest_checkpoint, read_diverged, read_state, trained_to_end)

FIELDS = ("run_dir", "state", "alive", "step", "total_steps", "loss", "val_loss", "tokens", "tokens_per_s",
          "checkpoint", "eta_s", "exit_code", "reason")


SCAN = object()
"""`run_status(checkpoint=SCAN)`: find the newest readable checkpoint (the default)."""


def run_status(run_dir: Path, checkpoint: int | None | object = SCAN) -> dict:
    """The run's status: FIELDS (docs/cli.md), then what state.json recorded (pid, host, times, version,
    command line; absent for old run directories). `checkpoint`: the newest readable checkpoint's step
    when the caller has just scanned them (None: there is none), so that they are not read again."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "plan.json").is_file():
        raise UserError(f"{run_dir} is not a mupctl run directory (no plan.json)", "RUN_DIR")
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in rows if isinstance(r.get("loss"), (int, float))]
    val = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
    recorded = read_state(run_dir)
    total, interval = plan_fields(run_dir)
    state = dict(recorded) if recorded else legacy_state(run_dir, rows, total)
    alive = launcher_alive(state) if recorded else state["state"] == RUNNING
    if recorded and state["state"] == RUNNING and not alive:
        where = state.get("host") or "its host"
        state |= {"state": CRASHED, "reason": f"the launcher (mupctl pid {state.get('pid')} on {where}) is gone and "
                  "recorded no end (killed by SIGKILL, out of memory, or its node was lost); continue with "
                  f"`mupctl resume {run_dir}`"}
    ckpt = newest_checkpoint(run_dir) if checkpoint is SCAN else checkpoint
    if state["state"] in (STOPPED, CRASHED) and total and trained_to_end(total, interval, ckpt, rows):
        state |= {"state": FINISHED, "reason": f"reached train.steps ({total}); the launcher ended as the workers "
                  f"finished, before it could record that (it says {state['state']})"}
    steps = [r["step"] for r in rows if type(r.get("step")) is int]
    step = max([s for s in (state.get("step"), *steps) if type(s) is int], default=0)
    last = train[-1] if train else {}
    out = {"run_dir": str(run_dir), "state": state["state"], "alive": alive, "step": step,
           "total_steps": state.get("total_steps") or total,
           "loss": last.get("loss"), "val_loss": val[-1]["val_loss"] if val else None,
           "tokens": last.get("tokens"), "tokens_per_s": last.get("tokens_per_s"),
           "checkpoint": str(run_dir / checkpoint_name(ckpt)) if ckpt is not None else None,
           "eta_s": None, "exit_code": state.get("exit_code"), "reason": state.get("reason")}
    if alive:
        out["eta_s"] = eta_s(train, out["total_steps"] - step, state.get("started"))
    recorded_fields = {k: v for k, v in state.items() if k not in out and k not in ("step", "checkpoint")}
    return out | recorded_fields | {"recorded": recorded is not None}


def plan_fields(run_dir: Path) -> tuple[int | None, int]:
    """plan.json's train.steps and checkpoint.interval ((None, 0) where it cannot say)."""
    try:
        plan = json.loads((run_dir / "plan.json").read_text())
        return plan["train"]["steps"], plan["checkpoint"]["interval"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, 0


def eta_s(train: list[dict], left: int, since: float | None) -> float | None:
    """Seconds to go at the pace of this launch's train rows (wall clock: evaluations and checkpoints
    included), or at the last row's tokens/s when there is one row or the rows have no time."""
    timed = [r for r in train if isinstance(r.get("time"), float) and r["time"] >= (since or 0)]
    if len(timed) >= 2 and timed[-1]["step"] > timed[0]["step"]:
        pace = (timed[-1]["time"] - timed[0]["time"]) / (timed[-1]["step"] - timed[0]["step"])
        return max(0.0, left * pace)
    last = train[-1] if train else {}
    if last.get("tokens_per_s") and last.get("tokens") and last.get("step"):
        return max(0.0, left * last["tokens"] / last["step"] / last["tokens_per_s"])
    return None


def legacy_state(run_dir: Path, rows: list[dict], total: int | None) -> dict:
    """The state of a run directory without state.json, inferred from what its run left behind."""
    last_step = max((r["step"] for r in rows if type(r.get("step")) is int and "loss" in r), default=0)
    events = read_jsonl(run_dir / "events.jsonl")
    last = events[-1] if events else {}
    pid = lock_holder(run_dir)
    if pid is not None:
        return {"state": RUNNING, "step": last_step, "pid": pid, "reason": None}
    diverged = read_diverged(run_dir)
    if diverged is not None:
        return {"state": DIVERGED, "step": diverged["step"], "exit_code": 1, "reason": diverged["message"]}
    if last.get("event") == "stop":
        return {"state": STOPPED, "step": last.get("step"), "exit_code": 1,
                "reason": f"stopped by a signal after step {last.get('step')}"}
    if last.get("event") == "failed":
        return {"state": CRASHED, "step": last_step, "exit_code": 1, "reason": last.get("message")}
    if total is not None and last_step >= total:
        return {"state": FINISHED, "step": last_step, "exit_code": 0, "reason": f"reached train.steps ({total})"}
    return {"state": CRASHED, "step": last_step, "reason": f"ended at step {last_step} of {total} with no recorded "
            "end (a run directory from before state.json: killed?)"}


def _n(value, fmt: str = "{:.4f}") -> str:
    return "—" if value is None else fmt.format(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def summary_line(status: dict, seconds: float | None = None) -> str:
    """One line: `finished at step 40/40: loss 2.1142, val loss 2.3001, 655,360 tokens in 0:00:31; RUN_DIR`."""
    took = "" if seconds is None else f" in {duration(seconds)}"
    return (f"{status['state']} at step {status['step']}/{status['total_steps']}: loss {_n(status['loss'])}, val loss "
            f"{_n(status['val_loss'])}, {_n(status['tokens'], '{:,}')} tokens{took}; {status['run_dir']}")


def format_status(status: dict) -> str:
    """The human-readable view of `run_status`."""
    alive = "running" if status["alive"] else "not running"
    lines = [f"{status['run_dir']}: {status['state']} ({alive})",
             f"  step        {status['step']} / {status['total_steps']}",
             f"  loss        {_n(status['loss'])}    val loss {_n(status['val_loss'])}",
             f"  tokens      {_n(status['tokens'], '{:,}')} at {_n(status['tokens_per_s'], '{:,.0f}')} tokens/s",
             f"  checkpoint  {status['checkpoint'] or '— (none)'}",
             f"  eta         {duration(status['eta_s'])}"]
    if status.get("heartbeat") and status["alive"]:
        lines.append(f"  heartbeat   {time.time() - status['heartbeat']:.0f} s ago (pid {status.get('pid')} on "
                     f"{status.get('host')})")
    if status["state"] != RUNNING:
        code = "" if status["exit_code"] is None else f"exit {status['exit_code']}: "
        lines.append(f"  ended       {code}{status['reason']}")
    return "\n".join(lines)
