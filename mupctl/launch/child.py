"""Child processes that run in their own session and die with their parent.

`mupctl train` starts torchrun, and `mupctl sweep` starts one `mupctl train` per cell, each in a
new session (`start_new_session=True`): a terminal's Ctrl-C then reaches the parent alone, which
passes each SIGINT or SIGTERM on exactly once. A second copy straight from the terminal would cut
torchrun's shutdown short and kill the workers before they save. The price of the new session is that
a SIGKILL of the parent's process group no longer reaches the child, so `child_setup` asks the
kernel for a SIGKILL when the parent dies (Linux's PR_SET_PDEATHSIG). `spawn` starts such a child.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

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
