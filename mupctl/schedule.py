"""LR schedules as a pure function of the step: lr(step) = peak_lr · factor(step).

No scheduler state exists, so exact resume needs only the step. Every param group keeps its plan
LR as `peak_lr`, so the per-role muP multipliers survive any schedule.
"""

from __future__ import annotations

import math


def lr_factor(step: int, name: str, steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1,
              decay_fraction: float = 0.2) -> float:
    """Factor for the update made at `step` (0-based).

    warmup: linear (step+1)/warmup_steps; then
    cosine: r + (1-r)·½(1+cos(π·p)); linear: 1 - (1-r)·p; constant: 1;
    wsd (warmup-stable-decay): 1 until the last `decay_fraction` of steps, then linear to r;
    p = progress through the post-warmup steps in [0, 1], r = min_lr_ratio.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    r = min_lr_ratio
    if name == "wsd":
        decay_start = steps - max(1, int(round(decay_fraction * steps)))
        if step < max(decay_start, warmup_steps):
            return 1.0
        span = max(1, steps - 1 - max(decay_start, warmup_steps))
        return 1.0 - (1.0 - r) * min(1.0, (step - max(decay_start, warmup_steps)) / span)
    p = min(1.0, (step - warmup_steps) / max(1, steps - 1 - warmup_steps))
    if name == "cosine":
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
    if name == "linear":
        return 1.0 - (1.0 - r) * p
    raise ValueError(f"unknown schedule {name!r}")
