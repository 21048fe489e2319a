"""Newton–Schulz orthogonalization and the Muon LR adjustment, as torch.optim.Muon computes them.

For a gradient-like matrix G (A × B), in bf16: transpose it when A > B (so that the Gram matrix is the
small one), X₀ = G / max(‖G‖_F, eps), then `steps` times

    G = X Xᵀ,   X ← a·X + (b·G + c·G²)·X        (a, b, c) = (3.4445, −4.7750, 2.0315)

(Keller Jordan's quintic coefficients: X ends near U S′ Vᵀ with S′ roughly in [0.5, 1.5]), and
transpose back. A 2-D input runs torch.optim.Muon's own chain (mm/addmm and the whole-tensor norm), so
the per-matrix path is bit-identical to torch's on the CPU; a 3-D input [n, A, B] runs the same chain
once for all n matrices (bmm/baddbmm, one Frobenius norm per matrix). tests/test_muon_unit.py compares
the two paths and torch.optim.Muon.
"""

from __future__ import annotations

import math

import torch

COEFFICIENTS = (3.4445, -4.7750, 2.0315)
EPS = 1e-7


def orthogonalize(g: torch.Tensor, steps: int, coefficients=COEFFICIENTS, eps: float = EPS) -> torch.Tensor:
    """NS(g) in bf16 for one matrix [A, B] or a batch [n, A, B] of same-shape matrices (never in place)."""
    a, b, c = coefficients
    x = g.to(torch.bfloat16)  # g itself when it is bf16 already (Muon's stacked batch): the division copies
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    if x.dim() == 2:
        x = x / x.norm().clamp(min=eps)
        mm = torch.addmm
    else:
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
        mm = torch.baddbmm
    for _ in range(steps):
        gram = x @ x.mT
        update = mm(gram, gram, gram, beta=b, alpha=c)
        x = mm(x, update, x, beta=a)
    return x.mT if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    """torch.optim.Muon's LR adjustment for an A × B matrix: "original" (or None) lr·√max(1, A/B),
    "match_rms_adamw" lr·0.2·√max(A, B)."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"unknown adjust_lr_fn {adjust_lr_fn!r}")
