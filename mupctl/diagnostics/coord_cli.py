"""`mupctl coord-check`: the coordinate check of a recipe across widths or depths, as files.

Also the command-line helpers that `mupctl sweep` shares: list parsing and the size axis. How each
size is made from the recipe: `mupctl.scaling.sizes`.

Verdict (`pass`, which decides the exit code): per judged role, max over steps t ≥ 2 of
|d log2 rms / d log2 size| ≤ threshold. Across depth only `residual` and `logits_centered` are
judged: under depth_mup the branch outputs (`attn_out`, `mlp_out`) carry the λ^-α multiplier and
shrink with depth by design.

Δ verdict (`delta_verdict`, reported next to it, never instead of it): the same test over the
Δ-from-init roles `residual_delta` and `logits_centered_delta` (RMS of h_t(x₀) − h_0(x₀) on the
step-0 batch; `coord_check` module docstring). Across depth this is the quantity depth-μP
(CompleteP, α ∈ [½, 1]) makes Θ(1): feature learning, the change of the representation from init.
The raw `residual` RMS also carries the sum of the L random init branch outputs, √L · L^-α under
depth_mup (L^-½ at α = 1); the two verdicts can differ only where that init term is not small
against Δ.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mupctl.diagnostics.reports import finite_json, write_json
from mupctl.errors import UserError
from mupctl.paths import check_dir
from mupctl.plan import compile_plan
from mupctl.recipe import load_recipe
from mupctl.recipe.schema import MAX_SEED
from mupctl.scaling.compiler import depth_alpha, resolved_base
from mupctl.scaling.sizes import AXIS_FLAG, sized_overrides

DEPTH_ROLES = ["residual", "logits_centered"]
DEPTH_NOTE = ("across depth only residual and logits_centered are judged: under depth_mup the branch "
              "outputs (attn_out, mlp_out) carry the L^-α multiplier and shrink with depth by design")
DELTA_NOTE = ("delta_verdict judges the change from init on the fixed step-0 batch, RMS(h_t(x0) - h_0(x0)), of "
              "the residual stream entering the final norm and of the centred logits; Δ = 0 at step 0, so "
              "its slopes start at step 1 (null at step 0); it is reported next to pass, which alone sets "
              "the exit code")
THEORY_NOTE = {  # (axis, whether the recipe scales that axis) → what the theory predicts
    ("depth", True): ("depth-μP (CompleteP) predicts a flat delta_verdict: L branch updates, each L^(α-1) "
                      "(in-branch LR) × L^-α (multiplier), add up to Θ(1)"),
    ("depth", False): ("no depth rule here (branch multiplier 1): the L branch updates add up to O(L), so "
                       "residual_delta should grow with depth (slope up to ≈ +1) and delta_verdict fail"),
    ("width", True): "μP predicts both the activations (pass) and their change from init (delta_verdict) flat in width",
    ("width", False): ("no width rule here (standard parameterization): updates grow with width, so both "
                       "verdicts should fail after a few steps at a tuned LR"),
}
FROM_STEP = 2
SMALL_WIDTH = 64  # below it, finite-width effects alone move the RMS slopes by up to ~0.25 (tests at 32-128)
MAX_CHECK_STEPS, MAX_CHECK_BATCH = 100_000, 2**16  # far past any useful check; bounds memory and time


def coord_caveats(axis: str, sizes: list[int], d_model: int) -> list[str]:
    """What makes the verdict loose, one line each: widths below SMALL_WIDTH (swept, or the fixed width of a
    depth check)."""
    small = [s for s in sizes if s < SMALL_WIDTH] if axis == "width" else [d_model] * (d_model < SMALL_WIDTH)
    if not small:
        return []
    return [f"width{'s' if len(small) > 1 else ''} {', '.join(map(str, small))} below {SMALL_WIDTH}: finite-width "
            "effects move the RMS slopes by up to ~0.25 there, so the verdict is loose; check at widths >= 64"]


# -- shared by the diagnostics commands -----------------------------------------------------------

def parse_list(text: str, kind: type, field: str) -> list:
    """"128,256,512" → [128, 256, 512] (kind=int); "1e-3,3e-3" → [0.001, 0.003] (kind=float)."""
    try:  # int()/float() would read "3_2" as 32 and "３２" as 32: both are refused, not guessed at
        values = None if "_" in text or not text.isascii() else [kind(item.strip()) for item in text.split(",")]
    except ValueError:
        values = None
    if not values or any(not math.isfinite(v) for v in values):
        example = "128,256,512" if kind is int else "1e-3,3e-3,1e-2"
        raise UserError(f"expected a comma-separated list of {kind.__name__}s such as {example}, got {text!r}",
                        field)
    return values


def choose_axis(widths: list[int] | None, depths: list[int] | None, min_sizes: int = 2) -> tuple[str, list[int]]:
    """Exactly one of widths/depths, ≥ min_sizes positive sizes, none twice → (axis, ascending sizes)."""
    if (widths is None) == (depths is None):
        raise UserError("give exactly one of --widths and --depths", "--widths")
    axis = "width" if widths is not None else "depth"
    sizes = widths if widths is not None else depths
    if any(s <= 0 for s in sizes) or len(sizes) < min_sizes:
        raise UserError(f"needs at least {min_sizes} positive size{'s' if min_sizes > 1 else ''}, got {sizes}",
                        AXIS_FLAG[axis])
    if len(set(sizes)) < len(sizes):
        raise UserError(f"lists a size twice, got {sizes}; give each size once", AXIS_FLAG[axis])
    return axis, sorted(sizes)


# -- the command ----------------------------------------------------------------------------------

def check_tokens(data, steps: int, batch: int) -> np.ndarray:
    """The tokens the check draws its batches from (`data`: a `TokenData`): the train split of the
    recipe's `data` (embedded, bin), or for `synthetic` (steps + 1) · batch of its random sequences."""
    if data.splits is not None:
        return data.splits["train"]
    return np.concatenate([data.sequence("train", 0, j) for j in range((steps + 1) * batch)])


def run_coord_check(recipe_path, overrides: list[str], widths: list[int] | None, depths: list[int] | None,
                    steps: int, batch: int, seq_len: int | None, out_dir, threshold: float = 0.1,
                    seed: int = 0) -> dict:
    """Run the coordinate check in process; write `coord_check.json` and `coord_check.png` to out_dir;
    return the summary: {"axis", "sizes", "pass", "threshold", "from_step", "judged_roles",
    "max_abs_slope" {role: …}, "note", "delta_verdict" {"pass", "threshold", "from_step",
    "judged_roles", "max_abs_slope", "note"}, "theory", "warnings" (`coord_caveats`), "json", "png"}
    (non-finite numbers as null).
    `pass` is the raw-RMS verdict (as before the Δ roles existed) and alone decides the CLI's exit
    code; `theory` names the verdict the scaling theory of this axis and recipe speaks to."""
    from mupctl.data import open_data
    from mupctl.diagnostics.coord_check import DELTA_ROLES, coord_check, rms_roles, summarize
    from mupctl.diagnostics.plots import plot_coord_check, require_matplotlib

    axis, sizes = choose_axis(widths, depths)
    if not FROM_STEP <= steps <= MAX_CHECK_STEPS:
        raise UserError(f"must be in {FROM_STEP}..{MAX_CHECK_STEPS} (slopes are judged from step {FROM_STEP} on; "
                        f"a coordinate check needs a few steps), got {steps}", "--steps")
    if not 0 < batch <= MAX_CHECK_BATCH:
        raise UserError(f"must be in 1..{MAX_CHECK_BATCH} (sequences per step), got {batch}", "--batch")
    if not 0 < threshold < math.inf:
        raise UserError(f"must be a finite number > 0, got {threshold}", "--threshold")
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"must be in 0..{MAX_SEED}, got {seed}", "--seed")
    check_dir(Path(out_dir), "--out")
    require_matplotlib()
    per_size = sized_overrides(recipe_path, overrides, axis, sizes)
    recipes = {s: load_recipe(recipe_path, o) for s, o in per_size.items()}
    plans = {s: compile_plan(r) for s, r in recipes.items()}
    first = recipes[sizes[0]]
    seq_len = first.model.seq_len if seq_len is None else seq_len
    if not 0 < seq_len <= first.model.seq_len:
        raise UserError(f"must be in 1..model.seq_len ({first.model.seq_len}), got {seq_len}", "--seq-len")
    data = open_data(first.data, first.model.vocab_size, seq_len, seed)

    result = coord_check(plans.__getitem__, sizes, steps, batch, seq_len, seed, data=check_tokens(data, steps, batch))
    roles = DEPTH_ROLES if axis == "depth" else rms_roles(result)
    verdict = summarize(result, threshold, FROM_STEP, roles)
    delta = summarize(result, threshold, FROM_STEP, DELTA_ROLES)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scaled = first.scaling.recipe == "depth_mup" if axis == "depth" else first.scaling.recipe != "none"
    theory = THEORY_NOTE[axis, scaled]
    summary = {"axis": axis, "sizes": sizes, "judged_roles": roles, **verdict,
               "note": DEPTH_NOTE if axis == "depth" else "across width every recorded RMS role is judged",
               "delta_verdict": {**delta, "judged_roles": list(DELTA_ROLES), "note": DELTA_NOTE},
               "theory": theory, "warnings": coord_caveats(axis, sizes, first.model.d_model),
               "json": str(out / "coord_check.json"), "png": str(out / "coord_check.png")}
    report = {"name": first.name, "scaling_recipe": first.scaling.recipe, "depth_alpha": depth_alpha(first),
              "optimizer": first.optimizer.name, "base": resolved_base(first), "overrides": list(overrides),
              "data": data.describe(), "batch": batch, "seq_len": seq_len, "seed": seed, **result,
              "summary": summary}
    write_json(out / "coord_check.json", report)
    plot_coord_check(report, out / "coord_check.png")
    return finite_json(summary)


def _worst(max_abs_slope: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if v is not None and math.isfinite(v) else f"{k} n/a"
                     for k, v in max_abs_slope.items())


def format_summary(summary: dict) -> str:
    """The human-readable lines of a `run_coord_check` summary: the raw-RMS verdict (`pass`, the exit
    code; the same line as before the Δ roles existed), the Δ-from-init verdict (`delta_verdict`), and
    which of the two the theory of this axis and recipe speaks to (`theory`)."""
    delta = summary["delta_verdict"]
    return "\n".join([
        f"coord-check {'PASS' if summary['pass'] else 'FAIL'} (|slope| <= {summary['threshold']}): "
        f"{_worst(summary['max_abs_slope'])}; {summary['png']}",
        f"  delta from init (delta_verdict) {'PASS' if delta['pass'] else 'FAIL'} "
        f"(|slope| <= {delta['threshold']}, steps >= {delta['from_step']}): {_worst(delta['max_abs_slope'])}",
        f"  {summary['theory']}",
        *(f"  caveat: {w}" for w in summary.get("warnings", [])),
    ])
