"""Coordinate check: activation RMS per role over a few training steps, across model sizes.

For each size s: plan = make_plan(s); model and optimizer are built from it (fp32, fixed seed) and
trained `steps` optimizer steps (`TrainStep`: constant LR, no clipping, one micro batch) on the same
real-text batches for every size, recording `model.record` before each update (step 0 = at init).
A parameterization is size-stable when log2 rms is flat in log2 size: the least-squares slope at
each step is ≈ 0 (mup across width, depth_mup across depth), while SP's grows after a few updates at
a large LR. Fit from step 2 on: at init a non-zero readout under mup makes logits shrink as m^-½ by
design.

Δ from init. The RMS of an activation mixes its init value with what training added to it. μP's
and CompleteP's claim is about the second part, feature learning: for a fixed probe batch x₀ (the
step-0 batch) and the model θ_t after t optimizer steps,

    residual_delta(t)        = RMS(h_t(x₀) − h_0(x₀)),   h = the residual stream entering the final norm
    logits_centered_delta(t) = RMS(z_t(x₀) − z_0(x₀)),   z = logits − their mean over the vocabulary

must be Θ(1) in size. Both are measured under torch.no_grad with the model in the check's own
precision (fp32), and are 0 exactly at t = 0, so their slopes start at step 1 (log2 0 is not a
number). Why it matters across depth: under depth_mup (branch multiplier 1/L at the default α = 1,
L = n_layers/base)
the L random init branch outputs are uncorrelated and add up to √L · 1/L = L^-½, which can tilt
the raw `residual` RMS, while the updates of the L branches are aligned and add up to L · 1/L = Θ(1):
the theory (CompleteP; Tensor Programs VI; Bordelon et al.) predicts a flat Δ. Without the 1/L
multiplier (mup, none) the updates add up to O(L): Δ grows with depth (slope up to ≈ +1).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from mupctl.model import GPT, rms as tensor_rms
from mupctl.optim import build_optimizer
from mupctl.plan import Plan
from mupctl.train_step import TrainStep

DELTA_ROLES = ["residual_delta", "logits_centered_delta"]
"""The Δ-from-init roles (module docstring), recorded next to `model.record`'s roles in `rms`."""
DELTA_FIRST_STEP = 1
"""Δ is 0 at step 0 by construction: no slope there, and no verdict ever looks at it."""


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs: Σ(x-x̄)(y-ȳ) / Σ(x-x̄)²."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _log2(v: float) -> float:
    return math.log2(v) if v > 0 and math.isfinite(v) else math.nan


def first_step(role: str) -> int:
    """The first step whose slope is defined for `role`: 1 for the Δ roles, 0 otherwise."""
    return DELTA_FIRST_STEP if role in DELTA_ROLES else 0


def text_batches(tokens: np.ndarray, n: int, batch: int, seq_len: int, seed: int):
    """n batches (x, y) of random windows: x = tokens[s : s+T], y = tokens[s+1 : s+T+1]."""
    starts = np.random.default_rng(seed).integers(0, len(tokens) - seq_len - 1, size=(n, batch))
    windows = torch.from_numpy(tokens[starts[..., None] + np.arange(seq_len + 1)].astype(np.int64))
    return windows[..., :-1], windows[..., 1:]


@torch.no_grad()
def probe(model: GPT, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, z) of the model on idx, no grad, in the model's own precision (no autocast), as fp32:
    h = the residual stream entering the final norm (captured by a forward pre-hook on
    `model.norm_f`, so it is exactly the `residual` role's tensor x_L), z = logits − mean_v logits.
    `model.record` is left as it was and not written."""
    captured = []
    handle = model.norm_f.register_forward_pre_hook(lambda _mod, args: captured.append(args[0].detach()))
    saved, model.record = model.record, None
    try:
        logits = model(idx).float()
    finally:
        handle.remove()
        model.record = saved
    if len(captured) != 1:
        raise RuntimeError(f"expected one call of the final norm per forward, got {len(captured)}")
    return captured[0].float().clone(), logits - logits.mean(-1, keepdim=True)


def coord_check(make_plan: Callable[[int], Plan], sizes: list[int], steps: int, batch: int, seq_len: int,
                seed: int = 0, data: np.ndarray | None = None) -> dict:
    """Train each size `steps` steps and return the activation RMS per role and its size slopes:
    {"sizes", "steps", "rms": {role: [[rms at step t] per size]}, "loss": [[loss at step t] per size],
    "slopes": {role: [d log2 rms / d log2 size at step t]}}. `data`: a token array (default: the
    embedded Shakespeare corpus as bytes).

    Roles: `model.record`'s (embedding, attn_out, mlp_out, residual, logits, logits_centered: RMS of
    the activation on the step-t batch, before update t) and the `DELTA_ROLES` (RMS of the change
    from init on the fixed step-0 batch x₀ after t updates; 0 at t = 0, where their slope is NaN).
    A slope is NaN at any step where some size has a value that is not positive and finite."""
    if len(set(sizes)) < 2:
        raise ValueError(f"a coordinate check needs at least two distinct sizes, got {sizes}")
    if data is None:
        from mupctl.data.corpus import load_text
        data = np.frombuffer(load_text().encode(), dtype=np.uint8)
    xs, ys = text_batches(np.asarray(data), steps + 1, batch, seq_len, seed)
    top = int(max(xs.max(), ys.max()))  # the largest token id the check feeds
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rms: dict[str, list[list[float]]] = {}
    losses = []
    for size in sizes:
        plan = make_plan(size)
        if plan.model.seq_len < seq_len or plan.model.vocab_size <= top:
            raise ValueError(f"size {size}: the plan's seq_len/vocab_size cannot hold the data")
        torch.manual_seed(seed)
        model = GPT(plan, device=device)
        train_step = TrainStep(model, build_optimizer(model, plan))
        x0 = xs[0].to(device)
        h0 = z0 = None
        trace: dict[str, list[float]] = {}
        losses.append([])
        for t in range(steps + 1):
            h, z = probe(model, x0)  # θ_t = after t updates, the same state the record below sees
            if t == 0:
                h0, z0 = h, z
            trace.setdefault("residual_delta", []).append(tensor_rms(h - h0).item())
            trace.setdefault("logits_centered_delta", []).append(tensor_rms(z - z0).item())
            model.record = {}
            batch_t = (xs[t].to(device), ys[t].to(device))
            if t < steps:
                loss, _ = train_step(t, [batch_t])
            else:
                with torch.no_grad():
                    loss = model(*batch_t)
            for role, v in model.record.items():
                trace.setdefault(role, []).append(v.item())
            losses[-1].append(loss.item())
        for role, series in trace.items():
            rms.setdefault(role, []).append(series)
    log_sizes = [math.log2(s) for s in sizes]
    slopes = {role: [fit_slope(log_sizes, [_log2(per_size[t]) for per_size in series])
                     if t >= first_step(role) else math.nan for t in range(steps + 1)]
              for role, series in rms.items()}
    return {"sizes": list(sizes), "steps": steps, "rms": rms, "loss": losses, "slopes": slopes}


def rms_roles(result: dict) -> list[str]:
    """The recorded activation-RMS roles of a `coord_check` result (all but the Δ roles), sorted."""
    return sorted(r for r in result["slopes"] if r not in DELTA_ROLES)


def summarize(result: dict, threshold: float, from_step: int = 2, roles: list[str] | None = None) -> dict:
    """Per role, max |slope| over steps ≥ max(from_step, first_step(role)) (non-finite counts as ∞);
    pass when all ≤ threshold. `roles` restricts the verdict (e.g. ["residual", "logits_centered"]
    across depth, where branch outputs shrink as 1/L by design under depth_mup); by default every
    role except the Δ roles, which get their own verdict: summarize(result, threshold, from_step,
    DELTA_ROLES). A Δ role's step 0 (Δ = 0, slope NaN) is never judged, whatever from_step is."""
    roles = roles or rms_roles(result)
    worst = {role: max(abs(s) if math.isfinite(s) else math.inf
                       for s in result["slopes"][role][max(from_step, first_step(role)):])
             for role in roles}
    return {"threshold": threshold, "from_step": from_step, "max_abs_slope": worst,
            "pass": all(v <= threshold for v in worst.values())}
