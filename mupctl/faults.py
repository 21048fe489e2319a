"""Test-only fault injection: crashes at chosen points, switched on by environment variables that
tests set (tests/test_resume.py). Unset, every hook is a no-op.

- `MUPCTL_FAULT_STEP=N`: rank 0 of the first attempt (no torchrun restart yet) SIGKILLs itself
  after step N, once that step's bookkeeping (log, checkpoint) is done: a worker crash.
- `MUPCTL_FAULT_BEFORE_COMMIT=N`: the rank that commits SIGKILLs itself inside the save of
  step N, after every file is written and before the commit rename.
- `MUPCTL_FAULT_LATE_SIGNAL=INT|TERM`: the launcher sends itself that signal after torchrun has
  exited and before the end is recorded (a Ctrl-C that comes as the run finishes).
"""

from __future__ import annotations

import os
import signal


def _kill_if(variable: str, step: int) -> None:
    if os.environ.get(variable) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


def after_step(step: int, rank: int, restart: int) -> None:
    if rank == 0 and restart == 0:
        _kill_if("MUPCTL_FAULT_STEP", step)


def before_commit(step: int) -> None:
    _kill_if("MUPCTL_FAULT_BEFORE_COMMIT", step)


def after_workers() -> None:
    name = os.environ.get("MUPCTL_FAULT_LATE_SIGNAL")
    if name:
        os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
