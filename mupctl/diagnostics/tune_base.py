"""`mupctl tune-base`: tune several hyperparameters at the base shape, then emit the target recipe.

Under μP every base value (η, σ, the per-role constants `scaling.*_mult`, α_out, …) transfers, so all
of them can be tuned where training is cheap, as Tensor Programs V tuned GPT-3's on a small model.
An LR sweep alone leaves the others at their defaults, and a poorly tuned σ then reaches every
width (docs/results round 14).

Coordinate descent at the base shape (the recipe resized to its resolved `scaling.base` width and
depth): in round r = 1..R, for each key k of `--keys` in turn, a one-size `run_sweep` of k over
v·2^(s·j), j = −J..J (v the current value, s = 1 octave in round 1 and ½ octave after), the other
keys at their current values; k's new value is that sweep's fitted optimum (`fit_optimum`, a parabola
in log2 k). An optimum on the grid's edge extends the grid by J points past it, at most twice. Each
sweep lives in WORK/r<r>-<key>/, so an interrupted run resumes where it stopped.

Writes WORK/tune_base.json (each sweep's grid, mean curve, optimum; the tuned values) and
WORK/tune_base.md, and emits the target recipe as `tune` does (base shape written out, tuned values
set, `--target` overrides last).
"""

from __future__ import annotations

import math
from pathlib import Path

from mupctl.diagnostics.reports import write_json
from mupctl.diagnostics.sweep import run_sweep
from mupctl.diagnostics.tune import check_target, depth_caveats, small_proxy, target_recipe, write_target
from mupctl.errors import UserError
from mupctl.paths import atomic_write, check_dir
from mupctl.plan import build_plan
from mupctl.recipe import load_recipe
from mupctl.recipe.load import get_dotted
from mupctl.recipe.schema import MAX_FACTOR
from mupctl.scaling.compiler import base_init_std, resolved_base
from mupctl.scaling.sizes import pinned_base, size_overrides

DEFAULT_KEYS = ("optimizer.lr", "model.init_std", "scaling.alpha_out")
MAX_EXTENSIONS = 2


def start_value(recipe, key: str) -> float:
    """The value a key starts from: the recipe's, or the default the compiler resolves for it."""
    if key == "model.init_std" and recipe.model.init_std is None:
        return base_init_std(recipe, resolved_base(recipe))
    if key == "scaling.alpha_attn" and recipe.scaling.alpha_attn is None:
        return math.sqrt(resolved_base(recipe)["d_head"])
    value = get_dotted(recipe.model_dump(), key)
    if type(value) is not float or not value > 0:
        raise UserError(f"{key} must be a positive real-valued recipe field to tune on a log grid (got {value!r}); "
                        "give keys such as optimizer.lr, model.init_std, scaling.alpha_out or "
                        "scaling.lr_mult.embedding", "--keys")
    return value


def base_shape_overrides(recipe) -> list[str]:
    """The overrides that train `recipe` at its own base shape (base pinned, so m = λ = 1)."""
    base = resolved_base(recipe)
    width = size_overrides(recipe, "width", base["d_model"], "--keys")
    if base["d_model"] // int(width[1].split("=")[1]) != base["d_head"]:
        raise UserError(f"trains at the base shape, and scaling.base.d_head {base['d_head']} differs from the model's "
                        f"head size {recipe.model.d_model // recipe.model.n_heads}; give the model the base's head "
                        "size", "scaling.base.d_head")
    return pinned_base(recipe) + width + size_overrides(recipe, "depth", base["n_layers"])


def grid(value: float, step: float, points: int) -> list[float]:
    """value · 2^(step·j), j = −(points−1)/2 … (points−1)/2."""
    half = (points - 1) // 2
    return [value * 2.0 ** (step * j) for j in range(-half, half + 1)]


def tune_key(recipe_path, overrides: list[str], key: str, values: list[float], work: Path, label: str,
             steps: int, seeds: int, parallel, gpus) -> dict:
    """One key's sweep at the base width, extended past an edge optimum up to MAX_EXTENSIONS times."""
    width = load_recipe(recipe_path, overrides).model.d_model
    for _ in range(MAX_EXTENSIONS + 1):
        if max(values) > MAX_FACTOR:  # the sweep would blame its --lrs, which tune-base has not
            raise UserError(f"its grid reaches {max(values):.3g}, past the largest value swept ({MAX_FACTOR:g}); start "
                            "from a smaller value", key)
        report = run_sweep(recipe_path, overrides, [width], None, values, steps, seeds, work / label,
                           parallel=parallel, gpus=gpus, lr_key=key)
        opt = report["curves"][0]["optimum"]
        if opt["lr"] is None or not opt["at_edge"]:
            break
        ratio, half = values[1] / values[0], (len(values) - 1) // 2
        values = values + [values[-1] * ratio ** k for k in range(1, half + 1)] if opt["lr"] == values[-1] else \
            [values[0] / ratio ** k for k in range(half, 0, -1)] + values
    if opt["lr"] is None:
        raise UserError(f"every cell of the {key} sweep diverged or failed ({work / label}); start from a smaller "
                        "value in the recipe", "--keys")
    return {"key": key, "values": report["lrs"], "val_loss": report["curves"][0]["val_loss"], "optimum": opt,
            "dir": str(work / label)}


def tune_base(recipe_path, overrides: list[str], keys: list[str], steps: int, seeds: int, rounds: int,
              points: int, work_dir, out_path, targets: list[str], force: bool = False,
              parallel: int | None = None, gpus: list[int] | None = None) -> dict:
    """Run the coordinate descent (module docstring) and emit the target recipe; returns the summary
    written to WORK/tune_base.json plus "path" and "warnings"."""
    if not keys or len(set(keys)) < len(keys):
        raise UserError(f"give each key once, got {keys}", "--keys")
    for value, flag, low in ((rounds, "--rounds", 1), (points, "--points", 3)):
        if value < low:
            raise UserError(f"must be ≥ {low}, got {value}", flag)
    if points % 2 == 0:
        raise UserError(f"must be odd (a grid centred on the current value), got {points}", "--points")
    recipe = load_recipe(recipe_path, overrides)
    build_plan(recipe)
    at_base = list(overrides) + base_shape_overrides(recipe)
    current = {k: start_value(recipe, k) for k in keys}
    out = check_target(out_path, force, targets, "--out", proxy=recipe, tuned=tuple(keys))
    work = check_dir(Path(work_dir), "--work").resolve()
    history = []
    for r in range(1, rounds + 1):
        for key in keys:
            sets = at_base + [f"{k}={v!r}" for k, v in current.items() if k != key]
            values = grid(current[key], 1.0 if r == 1 else 0.5, points)
            row = tune_key(recipe_path, sets, key, values, work, f"r{r}-{key}", steps, seeds, parallel, gpus)
            current[key] = row["optimum"]["lr"]
            history.append(row | {"round": r})
    values = [f"{k}={v!r}" for k, v in current.items()]
    tuned = load_recipe(recipe_path, list(overrides) + values)  # the recipe's own shape, tuned base values
    summary = {"recipe_path": None if recipe_path is None else str(Path(recipe_path).resolve()),
               "overrides": list(overrides), "base": resolved_base(recipe), "keys": keys, "steps": steps,
               "seeds": seeds, "rounds": rounds, "tuned": current, "sweeps": history,
               "base_loss": history[-1]["optimum"]["loss"]}
    write_json(work / "tune_base.json", summary)
    atomic_write(work / "tune_base.md", markdown(summary))
    target = target_recipe(tuned.model_dump(mode="json"), resolved_base(recipe), targets)
    build_plan(target)
    base, proxy = resolved_base(recipe), tuned.model_dump(mode="json")
    warnings = [f"{row['key']}: the optimum {row['optimum']['lr']:.4g} is still at the grid edge after "
                f"{MAX_EXTENSIONS} extensions" for row in history[-len(keys):] if row["optimum"]["at_edge"]]
    warnings += small_proxy("width", base["d_model"], proxy, steps)
    warnings += depth_caveats({"axis": "depth", "reference_size": base["n_layers"], "proxy_recipe": proxy}, target)
    header = [f"# Emitted by mupctl tune-base: {', '.join(f'{k} = {v:.6g}' for k, v in current.items())}, tuned at "
              f"the base shape {summary['base']} ({rounds} round(s) over {', '.join(keys)}; base val loss "
              f"{summary['base_loss']:.4f}); {work / 'tune_base.md'}",
              *(f"# warning: {w}" for w in warnings)]
    write_target(out, header, target)
    return summary | {"path": str(out), "warnings": warnings}


def markdown(summary: dict) -> str:
    """tune_base.md: one row per sweep (round, key, grid, optimum) and the tuned values."""
    lines = [f"# tune-base at {summary['base']}", "",
             f"{summary['steps']} steps, {summary['seeds']} seed(s); each sweep holds the other keys at their "
             "values at that time.", "", "| round | key | values (mean val loss) | optimum | fit |",
             "| --- | --- | --- | --- | --- |"]
    for row in summary["sweeps"]:
        cells = ", ".join(f"{v:.4g}: {'—' if y is None else f'{y:.4f}'}" for v, y in zip(row["values"], row["val_loss"]))
        opt = row["optimum"]
        lines.append(f"| {row['round']} | `{row['key']}` | {cells} | {opt['lr']:.4g} ({opt['loss']:.4f})"
                     f"{' grid edge' if opt['at_edge'] else ''} | {opt['fit']} |")
    lines += ["", "Tuned: " + ", ".join(f"`{k}` = {v:.6g}" for k, v in summary["tuned"].items()), ""]
    return "\n".join(lines)
