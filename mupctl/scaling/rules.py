"""The scaling rules as exponent tables: every value is ``base · m^a · λ^b``.

m = d_model / base.d_model (width multiplier), λ = n_layers / base.n_layers (depth multiplier),
m_h = d_head / base.d_head (head-size multiplier, only for the attention scale).
Base values (σ, η, ε, wd) are the ones tuned at the base shape; see `compiler.base_value`.

The width tables a (one per optimizer family: adam, sgd, muon, muon_match_rms) live with the
optimizer that declares them, in the registry `mupctl.scaling.optimizers` (`WIDTH`); the depth
exponents, the hidden_out init depth rule and the forward multipliers are here.

Sources: Tensor Programs V (arXiv 2203.03466) Table 8 and microsoft/mup `MuAdam`/`MuSGD`/
`MuReadout`; CompleteP (arXiv 2505.01618) Table 1, α ∈ [½, 1]; the spectral condition (arXiv
2310.17813) for Muon. docs/scaling.md explains each row.
"""

from __future__ import annotations

from mupctl.scaling.optimizers import WIDTH

QUANTITIES = ("init_std", "lr", "eps", "weight_decay")


def depth_in_branch(fam: str, quantity: str, alpha: float) -> float:
    """Depth exponent b of λ under `depth_mup` for tensors inside residual branches (CompleteP,
    α ∈ [½, 1]; α = 1 by default).

    The branch multiplier λ^-α puts λ^-α on every in-branch gradient. Adam's normalization and Muon's
    orthogonalization remove that factor, so a block's update moves the stream by λ^-α·η, and the L
    coherent block updates add up to Θ(1) when η ∝ λ^(α-1): LR ×λ^(α-1). Adam eps follows the
    gradient (×λ^-α); wd ×λ^(1-α) keeps LR·wd depth-independent; init ×λ⁰ (the multiplier carries
    depth). Muon (original or match_rms_adamw) has no eps; its rows were measured at α = 1 over
    depth 4 → 32 (docs/results/, round 6). SGD has no rule: `compiler.check_combination` rejects
    depth_mup + sgd."""
    if quantity == "eps":
        return -alpha if fam == "adam" else 0.0
    return {"init_std": 0.0, "lr": alpha - 1, "weight_decay": 1 - alpha}[quantity]


HIDDEN_OUT_INIT_DEPTH = {"none": -0.5, "mup": -0.5, "depth_mup": 0.0}
"""hidden_out init is σ/√(2·base.n_layers) · λ^b: b = -½ gives GPT-2's σ/√(2L); under depth_mup
the λ^-α branch multiplier carries depth, so the init must not count it again (b = 0)."""

_FORWARD = {
    # name: (exponent of m, exponent of λ, exponent of m_h) per recipe; depth_mup's residual_branch
    # λ exponent is -α (`forward_exponents`)
    "none": {"embedding": (0, 0, 0), "output_logits": (0, 0, 0), "attention_scale": (0, 0, -0.5),
             "residual_branch": (0, 0, 0)},
    "mup": {"embedding": (0, 0, 0), "output_logits": (-1, 0, 0), "attention_scale": (0, 0, -1),
            "residual_branch": (0, 0, 0)},
}


def forward_exponents(recipe: str, alpha: float) -> dict:
    """Forward multipliers' exponents. Bases: α_in, α_out, α_attn/base.d_head (α_attn = √base.d_head
    by default, so 1/√d_head at the base head size), 1. Attention: SP keeps 1/√d_head (m_h^-½), μP
    uses 1/d_head. depth_mup is mup plus the branch multiplier λ^-α (CompleteP)."""
    if recipe == "depth_mup":
        return _FORWARD["mup"] | {"residual_branch": (0, -alpha, 0)}
    return _FORWARD[recipe]


def exponents(recipe: str, fam: str, role: str, in_branch: bool, quantity: str,
              alpha: float = 1.0) -> tuple[float, float]:
    """(a, b) such that the value is base · m^a · λ^b (α: `depth_mup`'s CompleteP exponent)."""
    a = float(WIDTH[fam][role][quantity]) if recipe in ("mup", "depth_mup") else 0.0
    b = 0.0
    if role == "hidden_out" and quantity == "init_std":
        b = HIDDEN_OUT_INIT_DEPTH[recipe]
    elif recipe == "depth_mup" and in_branch:
        b = float(depth_in_branch(fam, quantity, alpha))
    return a, b


def scale(base: float | None, a: float, b: float, m: float, lam: float) -> float | None:
    """The one function that applies a rule: base · m^a · λ^b (None stays None)."""
    return None if base is None else base * m**a * lam**b
