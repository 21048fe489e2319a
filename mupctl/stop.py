"""Clean stops: a SIGTERM or SIGINT to a worker becomes a stop, agreed by every rank, at a step
boundary, where the worker saves a checkpoint and exits.

How a Ctrl-C travels: the launcher passes it on to torchrun as one SIGTERM, which torchrun forwards
to the workers; a second Ctrl-C ends torchrun, and the workers follow it (`launch.child.die_with_parent`).
"""

from __future__ import annotations

import signal
import sys
import time

import torch

from mupctl.ranks import agree, from_rank0

STOP_CHECK_S = 2.0  # seconds between checks for a stop request on every rank
STOP_PROBE = (5, 10)  # steps after the (re)start between which the step time is measured


class StopFlag:
    """Set by SIGTERM/SIGINT. A second SIGINT exits at once (no checkpoint)."""

    def __init__(self):
        self.requested = False
        self.interrupts = 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.interrupts += signum == signal.SIGINT
        if self.interrupts > 1:
            sys.exit(128 + signum)
        self.requested = True


class StopProbe:
    """`probe(step, forced)`: whether every rank stops after `step`. The flag is read on every rank
    (a host sync) at each forced check (log and checkpoint steps) and about every STOP_CHECK_S
    seconds in between: every step until the step time is measured, between the steps STOP_PROBE
    after the (re)start at `start`, then every max(1, STOP_CHECK_S / step time) steps (rank 0's
    timing, on every rank). So a SIGTERM is answered well inside torchrun's 30 s grace before SIGKILL."""

    def __init__(self, start: int, device: torch.device):
        self.flag = StopFlag()
        self.start, self.device = start, device
        self.every, self.marks = 1, {}

    def __call__(self, step: int, forced: bool = False) -> bool:
        n = step - self.start
        if n in STOP_PROBE:
            self.marks[n] = time.perf_counter()
            if len(self.marks) == len(STOP_PROBE):
                per_step = (self.marks[STOP_PROBE[1]] - self.marks[STOP_PROBE[0]]) / (STOP_PROBE[1] - STOP_PROBE[0])
                self.every = from_rank0(max(1, int(STOP_CHECK_S / max(per_step, 1e-9))), self.device)
        return (forced or n % self.every == 0) and agree(self.flag.requested, self.device)
