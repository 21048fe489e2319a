"""Coordinate check: activation RMS per role over a few training steps, across model sizes.

For each size s: plan = make_plan(s); model and optimizer are built from it (fp32, fixed seed) and
trained `steps` optimizer steps (constant LR, no clipping) on the same real-text batches for every
size, recording `model.record` before each update (step 0 = at init). A parameterization is
size-stable when log2 rms is flat in log2 size: the least-squares slope at each step is ≈ 0 (mup
across width, depth_mup across depth), while SP's grows after a few updates at a large LR. Fit from
step 2 on: at init a non-zero readout under mup makes logits shrink as m^-½ by design.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from mupctl.model import GPT
from mupctl.optim import build_optimizer


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs: Σ(x-x̄)(y-ȳ) / Σ(x-x̄)²."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _log2(v: float) -> float:
    return math.log2(v) if v > 0 and math.isfinite(v) else math.nan


def text_batches(tokens: np.ndarray, n: int, batch: int, seq_len: int, seed: int):
    """n batches (x, y) of random windows: x = tokens[s : s+T], y = tokens[s+1 : s+T+1]."""
    starts = np.random.default_rng(seed).integers(0, len(tokens) - seq_len - 1, size=(n, batch))
    windows = torch.from_numpy(tokens[starts[..., None] + np.arange(seq_len + 1)].astype(np.int64))
    return windows[..., :-1], windows[..., 1:]


def coord_check(make_plan: Callable[[int], dict], sizes: list[int], steps: int, batch: int, seq_len: int,
                seed: int = 0, data: np.ndarray | None = None) -> dict:
    """Train each size `steps` steps and return the activation RMS per role and its size slopes:
    {"sizes", "steps", "rms": {role: [[rms at step t] per size]}, "loss": [[loss at step t] per size],
    "slopes": {role: [d log2 rms / d log2 size at step t]}}. `data`: a token array (default: the
    embedded Shakespeare corpus as bytes)."""
    if len(set(sizes)) < 2:
        raise ValueError(f"a coordinate check needs at least two distinct sizes, got {sizes}")
    if data is None:
        from mupctl.data.corpus import load_text
        data = np.frombuffer(load_text().encode(), dtype=np.uint8)
    xs, ys = text_batches(np.asarray(data), steps + 1, batch, seq_len, seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rms: dict[str, list[list[float]]] = {}
    losses = []
    for size in sizes:
        plan = make_plan(size)
        if plan["model"]["seq_len"] < seq_len or plan["model"]["vocab_size"] <= int(data.max()):
            raise ValueError(f"size {size}: the plan's seq_len/vocab_size cannot hold the data")
        torch.manual_seed(seed)
        model = GPT(plan, device=device)
        opt = build_optimizer(model, plan)
        trace: dict[str, list[float]] = {}
        losses.append([])
        for t in range(steps + 1):
            model.record = {}
            loss = model(xs[t].to(device), ys[t].to(device))
            for role, v in model.record.items():
                trace.setdefault(role, []).append(v.item())
            losses[-1].append(loss.item())
            if t < steps:
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        for role, series in trace.items():
            rms.setdefault(role, []).append(series)
    log_sizes = [math.log2(s) for s in sizes]
    slopes = {role: [fit_slope(log_sizes, [_log2(per_size[t]) for per_size in series]) for t in range(steps + 1)]
              for role, series in rms.items()}
    return {"sizes": list(sizes), "steps": steps, "rms": rms, "loss": losses, "slopes": slopes}


def summarize(result: dict, threshold: float, from_step: int = 2, roles: list[str] | None = None) -> dict:
    """Per role, max |slope| over steps ≥ from_step (non-finite counts as ∞); pass when all ≤ threshold.
    `roles` restricts the verdict (e.g. ["residual", "logits_centered"] across depth, where branch
    outputs shrink as 1/L by design under depth_mup)."""
    worst = {role: max(abs(s) if math.isfinite(s) else math.inf for s in result["slopes"][role][from_step:])
             for role in roles or result["slopes"]}
    return {"threshold": threshold, "from_step": from_step, "max_abs_slope": worst,
            "pass": all(v <= threshold for v in worst.values())}
