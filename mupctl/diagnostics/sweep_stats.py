"""The statistics of an LR sweep: optima, shift, drift, seed spread, transfer cost and regret.

Pure numbers in, numbers out (no files, no processes). A curve is the final val loss per grid LR
(LRs ascending; ∞ = diverged). x = log2 η throughout.
"""

from __future__ import annotations

import math

import numpy as np

VAL_RISE_TOL = 0.01  # nats: a cell whose final val loss is this far above its own best eval memorizes


def grid_best(losses: list[float]) -> int | None:
    """Index of the lowest finite loss of a curve (∞ = diverged); None when none is finite."""
    return min((i for i, y in enumerate(losses) if math.isfinite(y)), key=losses.__getitem__, default=None)


def fit_optimum(lrs: list[float], losses: list[float]) -> dict:
    """Optimum of one loss-vs-LR curve (lrs ascending; ∞ = diverged). i = argmin of the grid; with
    finite neighbours i±1, fit y = a·x² + b·x + c through the three points, x = log2 η; when a > 0 and
    the vertex x* = −b/2a lies in [x_{i−1}, x_{i+1}] the optimum is η* = 2^x*, loss = y(x*) ("parabola"),
    else the grid point ("grid"). A best point at either end of the grid is reported with at_edge."""
    xs = [math.log2(lr) for lr in lrs]
    i = grid_best(losses)
    if i is None:
        return {"lr": None, "log2_lr": None, "loss": None, "at_edge": False, "fit": "none"}
    grid = {"lr": lrs[i], "log2_lr": xs[i], "loss": losses[i], "at_edge": i in (0, len(lrs) - 1), "fit": "grid"}
    if grid["at_edge"] or not all(math.isfinite(y) for y in losses[i - 1:i + 2]):
        return grid
    a, b, c = np.polyfit(xs[i - 1:i + 2], losses[i - 1:i + 2], 2)
    vertex = -b / (2 * a) if a > 0 else math.nan
    if not xs[i - 1] <= vertex <= xs[i + 1]:
        return grid
    return {"lr": float(2.0 ** vertex), "log2_lr": float(vertex), "loss": float(a * vertex ** 2 + b * vertex + c),
            "at_edge": False, "fit": "parabola"}


def loss_at(lrs: list[float], losses: list[float], lr: float) -> float | None:
    """A curve's loss at an LR of its own span: the grid value at a grid point; between grid points
    the parabola in x through the three consecutive grid points centred nearest to x (the same
    model as `fit_optimum`), or the straight line between the two neighbours when the three are not
    all finite; ∞ when a neighbour diverged; None outside the grid."""
    xs, x = [math.log2(v) for v in lrs], math.log2(lr)
    if not xs[0] - 1e-9 <= x <= xs[-1] + 1e-9:
        return None
    near = min(range(len(xs)), key=lambda i: abs(xs[i] - x))
    if abs(xs[near] - x) < 1e-9:
        return losses[near]
    j = max(i for i in range(len(xs)) if xs[i] < x)  # x lies in (xs[j], xs[j+1])
    if not (math.isfinite(losses[j]) and math.isfinite(losses[j + 1])):
        return math.inf
    c = min(max(near, 1), len(xs) - 2)
    if len(xs) >= 3 and all(math.isfinite(y) for y in losses[c - 1:c + 2]):
        return float(np.polyval(np.polyfit(xs[c - 1:c + 2], losses[c - 1:c + 2], 2), x))
    t = (x - xs[j]) / (xs[j + 1] - xs[j])
    return (1 - t) * losses[j] + t * losses[j + 1]


def wider_is_better(sizes: list[int], lrs: list[float], curves: list[list[float]], optima: list[float]) -> dict:
    """At each grid LR within ±1 octave of the optima (log2 η in [min x* − 1, max x* + 1]), is the
    loss strictly lower for every larger size? curves[i][j] = loss of sizes[i] (ascending) at lrs[j]."""
    if not optima:
        return {"ok": None, "by_lr": []}
    lo, hi = min(optima) - 1, max(optima) + 1
    columns = [(lr, [curve[j] for curve in curves]) for j, lr in enumerate(lrs) if lo <= math.log2(lr) <= hi]
    by_lr = [{"lr": lr, "ok": all(map(math.isfinite, col)) and all(b < a for a, b in zip(col, col[1:]))}
             for lr, col in columns]
    return {"ok": all(row["ok"] for row in by_lr), "by_lr": by_lr}


def comparable_optima(fits: list[dict]) -> list[float]:
    """log2 η* of each size's `fit_optimum` result that has one; [] with one size (nothing to compare)."""
    return [f["log2_lr"] for f in fits if f["log2_lr"] is not None] if len(fits) > 1 else []


def drift(fits: list[dict]) -> float | None:
    """Signed drift in octaves: log2 η* of the largest size minus that of the smallest (> 0: the larger
    size wants a larger LR). shift_octaves is max − min and has no sign, so across seeds it cannot tell
    a drift that holds its sign from one that flips; this can. None with one size or an unfitted end."""
    if len(fits) < 2 or fits[0]["log2_lr"] is None or fits[-1]["log2_lr"] is None:
        return None
    return fits[-1]["log2_lr"] - fits[0]["log2_lr"]


def group_cells(cells: list[dict], sizes: list[int], lrs: list[float]) -> list[list[list[dict]]]:
    """groups[i][j]: the cells (one per seed) of size sizes[i] and LR lrs[j]."""
    return [[[c for c in cells if c["size"] == size and c["lr"] == lr] for lr in lrs] for size in sizes]


def seed_curves(cells: list[dict], sizes: list[int], lrs: list[float]) -> dict[int, list[list[float]]]:
    """seed → its own curves (one per size; ∞ where the cell is missing or diverged)."""
    return {seed: [[group[0]["final_val_loss"] if group else math.inf for group in row]
                   for row in group_cells([c for c in cells if c["seed"] == seed], sizes, lrs)]
            for seed in sorted({c["seed"] for c in cells})}


def seed_drifts(cells: list[dict], sizes: list[int], lrs: list[float]) -> list[dict]:
    """Per seed, `drift` of that seed's own curves: [{"seed", "drift_octaves"}]; [] with one seed."""
    per_seed = seed_curves(cells, sizes, lrs)
    if len(per_seed) < 2:
        return []
    return [{"seed": seed, "drift_octaves": drift([fit_optimum(lrs, curve) for curve in curves])}
            for seed, curves in per_seed.items()]


def seed_statistics(cells: list[dict], sizes: list[int], lrs: list[float], resamples: int = 1000,
                    level: float = 0.9) -> dict:
    """How far seeds alone move the result. seed_sd: the pooled standard deviation of a cell's final val
    loss over its seeds, √(mean over (size, LR) groups of the unbiased variance), groups with a
    diverged seed left out. shift_interval: a bootstrap of shift_octaves over seeds (each group's K
    seeds drawn K times with replacement, curves = their means, `resamples` times, numpy seed 0): the
    (1 − level)/2 and (1 + level)/2 quantiles. Both None with one seed; the interval also with one size.
    An interval reaching below 0.5 octave: these seeds cannot tell the shift from transfer."""
    table = [[[c["final_val_loss"] for c in group] for group in row] for row in group_cells(cells, sizes, lrs)]
    k = {len(group) for row in table for group in row}
    if k != {max(k)} or max(k) < 2:
        return {"seed_sd": None, "shift_interval": None}
    losses = np.array(table, dtype=float)  # (sizes, LRs, seeds)
    finite = np.isfinite(losses).all(-1)
    sd = float(np.sqrt(losses[finite].var(axis=-1, ddof=1).mean())) if finite.any() else None
    if len(sizes) < 2:
        return {"seed_sd": sd, "shift_interval": None}
    draw = np.random.default_rng(0).integers(0, losses.shape[-1], size=(resamples, *losses.shape))
    means = np.take_along_axis(losses[None], draw, axis=-1).mean(-1)  # (resamples, sizes, LRs)
    shifts = [max(o) - min(o) for o in (comparable_optima([fit_optimum(lrs, list(row)) for row in m])
                                        for m in means) if o]
    low, high = np.quantile(shifts, [(1 - level) / 2, (1 + level) / 2]) if shifts else (None, None)
    return {"seed_sd": sd, "shift_interval": None if not shifts else
            {"level": level, "low": float(low), "high": float(high), "resamples": resamples}}


def add_transfer_cost(curves: list[dict]) -> None:
    """curve["transfer_cost"] = L(η₀) − min L: the val loss a size loses when trained at the smallest
    size's best grid LR η₀ (tune small, launch big) instead of at its own best grid LR; 0 at the
    smallest size; ∞ (null in sweep.json) where η₀ diverged; None when a size has no finite loss
    or only one size was swept."""
    j = grid_best(curves[0]["val_loss"]) if len(curves) > 1 else None  # one size: nothing to transfer to
    for curve in curves:
        val, best = curve["val_loss"], grid_best(curve["val_loss"])
        curve["transfer_cost"] = None if j is None or best is None else val[j] - val[best]


def summarize_cells(cells: list[dict], sizes: list[int], lrs: list[float]) -> dict:
    """Per-size curves (mean over seeds), optima, shift, its seed interval and the wider-is-better check."""
    curves = []
    for size, by_lr in zip(sizes, group_cells(cells, sizes, lrs)):
        val = [sum(c["final_val_loss"] for c in group) / len(group) for group in by_lr]
        train = [sum(c["final_train_loss"] for c in group) / len(group) for group in by_lr]
        curves.append({"size": size, "val_loss": val, "train_loss": train, "optimum": fit_optimum(lrs, val)})
    add_transfer_cost(curves)
    # one size (a plain LR sweep): nothing to compare across, so no shift and no size check
    optima = comparable_optima([c["optimum"] for c in curves])
    rose = [c for c in cells if (c.get("val_rise") or 0) > VAL_RISE_TOL]
    return {"curves": curves, "shift_octaves": max(optima) - min(optima) if optima else None,
            "drift_octaves": drift([c["optimum"] for c in curves]), "seed_drifts": seed_drifts(cells, sizes, lrs),
            **seed_statistics(cells, sizes, lrs),
            "wider_is_better": wider_is_better(sizes, lrs, [c["val_loss"] for c in curves], optima),
            "reference_size": sizes[-1],
            "val_rose": {"tolerance": VAL_RISE_TOL, "cells": [c["id"] for c in rose],
                         "max": max((c["val_rise"] for c in rose), default=None)}}


def regret_of_curves(lrs: list[float], curves: list[list[float]], base_lrs: list[float],
                     base_curves: list[list[float]]) -> list[dict]:
    """Tune small, launch big, against tuning big. η₀ = `fit_optimum` of the smallest size's curve
    (the LR a user tunes at the base). Per size: at_reference = `loss_at` η₀ of that size's curve,
    own_best = its own `fit_optimum` loss, baseline_best = the baseline's `fit_optimum` loss at that
    size (parabola, or the best grid point at the edge), regret = at_reference − baseline_best,
    regret_own = at_reference − own_best. None where a value is missing; ∞ where η₀ diverged."""
    ref = fit_optimum(lrs, curves[0])
    rows = []
    for curve, base_curve in zip(curves, base_curves):
        at = None if ref["lr"] is None else loss_at(lrs, curve, ref["lr"])
        own, base = fit_optimum(lrs, curve), fit_optimum(base_lrs, base_curve)
        rows.append({"at_reference": at, "own_best": own["loss"], "baseline_best": base["loss"],
                     "baseline_at_edge": base["at_edge"], "baseline_lr": base["lr"],
                     "regret": None if at is None or base["loss"] is None else at - base["loss"],
                     "regret_own": None if at is None or own["loss"] is None else at - own["loss"]})
    return [{"reference_lr": ref["lr"]} | row for row in rows]


def regret(report: dict, baseline: dict) -> dict:
    """The regret of a sweep against its baseline twin (the same seeds under another scaling recipe;
    sizes matched by value, a size the baseline lacks has no baseline_best): `regret_of_curves` on the
    seed-mean curves (the headline figures), and on each seed's own curves (seed_regret,
    seed_regret_own; their sample sd is the seed spread)."""
    sizes, lrs, base_lrs = report["sizes"], report["lrs"], baseline["lrs"]
    theirs_mean = {c["size"]: c["val_loss"] for c in baseline["curves"]}
    mean = regret_of_curves(lrs, [c["val_loss"] for c in report["curves"]], base_lrs,
                            [theirs_mean.get(size, [math.inf] * len(base_lrs)) for size in sizes])
    mine, theirs = seed_curves(report["cells"], sizes, lrs), seed_curves(baseline["cells"], sizes, base_lrs)
    per_seed = {s: regret_of_curves(lrs, mine[s], base_lrs, theirs[s]) for s in mine if s in theirs}
    rows = []
    for i, (size, row) in enumerate(zip(sizes, mean)):
        seeds = {k: [r[i][k] for r in per_seed.values()] for k in ("regret", "regret_own")}
        rows.append({"size": size, **row, "seed_regret": seeds["regret"], "seed_regret_own": seeds["regret_own"],
                     "regret_sd": _sd(seeds["regret"]), "regret_own_sd": _sd(seeds["regret_own"])})
    return {"baseline": baseline["scaling_recipe"], "reference_size": sizes[0],
            "reference_lr": mean[0]["reference_lr"], "by_size": rows}


def _sd(values: list) -> float | None:
    """Sample sd of the finite values (None with fewer than two)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else None
