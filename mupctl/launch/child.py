"""Child processes that run in their own session and die with their parent.

`mupctl train` starts torchrun, and `mupctl sweep` starts one `mupctl train` per cell, each in a
new session (`start_new_session=True`): a terminal's Ctrl-C then reaches the parent alone, which
passes each SIGINT or SIGTERM on exactly once. A second copy straight from the terminal would cut
torchrun's shutdown short and kill the workers before they save. The price of the new session is that
a SIGKILL of the parent's process group no longer reaches the child, so `child_setup` asks the
kernel for a SIGKILL when the parent dies (Linux's PR_SET_PDEATHSIG). `spawn` starts such a child.
The workers, which torchrun starts, watch their parents themselves (`die_with_parent`).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def child_setup(parent_pid: int):
    """The `preexec_fn` for such a child (it runs in the child, before exec): unblock STOP_SIGNALS (a
    parent may block them while it starts the child) and, on Linux, die with the parent."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent_pid:  # the parent died before the line above took effect
                os._exit(1)
    return setup


def spawn(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """`subprocess.Popen(argv, **popen_kwargs)` in its own session, dying with this process."""
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=child_setup(os.getpid()), **popen_kwargs)


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie: a SIGKILLed launcher stays one until its own
    parent reaps it, which a harness reading the run's output may do only once every writer of that
    pipe, the workers included, has exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (a reused PID): not ours to judge
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone meanwhile, or no /proc (not Linux: existence is all there is to tell)
        return not os.path.isdir("/proc")
    return state != "Z"


def die_with_parent(last_words: Callable[[int], None] | None = None, poll_s: float = 0.1) -> None:
    """Exit when the torchrun agent that started this worker dies, or the `mupctl` launcher above it
    (`MUPCTL_LAUNCHER_PID`), so a killed run leaves no orphan trainer behind (holding GPUs, or
    writing into a run that is being resumed). The launcher check also covers an agent that died
    before this worker could read its PID. A polling thread rather than PR_SET_PDEATHSIG, which
    fires when the *thread* that forked us exits. `last_words(launcher_pid)` runs just before the exit
    when the launcher is gone (the worker records the run's end: `run_state.record_orphaned`)."""
    parent = os.getppid()
    launcher = int(os.environ.get("MUPCTL_LAUNCHER_PID", "0"))
    saying, said = threading.Lock(), []

    def alive() -> bool:
        return os.getppid() == parent and (not launcher or running(launcher))

    def say_last_words() -> None:
        """`last_words(launcher)` once, if the launcher is gone. Also at interpreter exit, where it waits for
        the watcher: when a peer rank dies with the launcher, this rank's main thread can fail its
        collective and exit before the watcher polls, or while it writes (a daemon thread cut off
        mid-write would leave half an end behind)."""
        with saying:
            if not said and last_words is not None and launcher and not running(launcher):
                said.append(launcher)
                last_words(launcher)

    def watch():
        while alive():
            time.sleep(poll_s)
        say_last_words()
        os.kill(os.getpid(), signal.SIGKILL)

    atexit.register(say_last_words)

    if not alive():
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
