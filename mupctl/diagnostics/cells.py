"""The cells of an LR sweep: what each one runs, where it lives, and what it measured.

Cell (size s, LR η, seed k) = `mupctl train RECIPE --set … --run-dir OUT/cells/<id>` with the size
overrides of `coord_cli.size_overrides` (base pinned), `<lr_key>=η`, `train.seed=seed0+k`,
`train.steps=N`, `checkpoint.interval=0` (unless the user's `--set` says otherwise) and
`train.eval_interval=N` when the recipe disables validation.

Per cell: final train loss = mean of the last ⌈10 %⌉ of the logged train losses; final val loss =
the val row at step N; val_rise = final val loss − the cell's best earlier eval.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from mupctl.errors import UserError
from mupctl.metrics import read_jsonl
from mupctl.plan import build_plan, changed_fields
from mupctl.recipe import load_recipe
from mupctl.scaling.sizes import sized_overrides


def data_passes(recipe, steps: int, train_tokens: int | None) -> float | None:
    """Tokens a cell reads / tokens in its training split: steps · global_batch · seq_len / train_tokens.
    Windows are drawn at random offsets, so this is how often each token is read on average, not a
    count of epochs. None for synthetic data, which never repeats."""
    if not train_tokens:
        return None
    return steps * recipe.train.global_batch * recipe.model.seq_len / train_tokens


def cell_id(axis: str, size: int, lr: float, seed: int) -> str:
    return f"{axis[0]}{size}-lr{lr:g}-s{seed}"


def cell_state(run_dir: Path, steps: int) -> str:
    """"diverged" (DIVERGED.json), "done" (train and val rows at the final step), "partial" (a run
    directory, unfinished) or "new"."""
    if (run_dir / "DIVERGED.json").exists():
        return "diverged"
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if any(r.get("step") == steps and "loss" in r for r in rows) and \
            any(r.get("step") == steps and "val_loss" in r for r in rows):
        return "done"
    return "partial" if (run_dir / "plan.json").exists() else "new"


def cell_losses(run_dir: Path, steps: int) -> dict:
    """final_train_loss, final_val_loss (∞ when the run did not finish: diverged, failed) and
    val_rise = final val loss − the lowest earlier val loss of the cell (None with one eval). A
    val_rise > 0 means the model got worse on held-out data late in training: usually it memorizes
    repeated data (or a late instability), and the final loss then ranks LRs by how little they fit."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train = [r["loss"] for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r and r.get("step") == steps]
    if not train or not val:
        return {"final_train_loss": math.inf, "final_val_loss": math.inf, "val_rise": None}
    tail = train[-math.ceil(len(train) / 10):]
    mean, final = sum(tail) / len(tail), val[-1]
    earlier = [r["val_loss"] for r in rows if "val_loss" in r and 0 < r.get("step", 0) < steps]
    return {"final_train_loss": mean if math.isfinite(mean) else math.inf,
            "final_val_loss": final if math.isfinite(final) else math.inf,
            "val_rise": final - min(earlier) if earlier and math.isfinite(final) else None}


def plan_cells(recipe_path, overrides, proxy, axis, sizes, lrs, seeds, steps, lr_key, out: Path) -> tuple[list, object]:
    """Every cell with its overrides, validated (recipe + plan) before anything runs; refuses a cell
    directory that holds a run with different settings. `proxy`: the recipe with `overrides`.
    Returns (cells, the first cell's recipe)."""
    fixed = [] if any(o.startswith("checkpoint.interval=") for o in overrides) else ["checkpoint.interval=0"]
    if not proxy.train.eval_interval:
        fixed.append(f"train.eval_interval={steps}")
    cells, first = [], None
    for size, sized in sized_overrides(recipe_path, overrides, axis, sizes).items():
        for lr in lrs:
            for k in range(seeds):
                seed = proxy.train.seed + k
                cell_overrides = fixed + sized + [f"{lr_key}={lr!r}", f"train.seed={seed}", f"train.steps={steps}"]
                recipe = load_recipe(recipe_path, cell_overrides)
                build_plan(recipe)
                first = first or recipe
                run_dir = out / "cells" / cell_id(axis, size, lr, seed)
                check_cell_dir(run_dir, recipe)
                cells.append({"id": run_dir.name, "size": size, "lr": lr, "seed": seed, "dir": str(run_dir),
                              "overrides": cell_overrides})
    return cells, first


def check_cell_dir(run_dir: Path, recipe) -> None:
    if not (run_dir / "recipe.yaml").exists():
        return
    changes = changed_fields(load_recipe(run_dir / "recipe.yaml").model_dump(mode="json"),
                             recipe.model_dump(mode="json"))
    if changes:
        field, old, new = changes[0]
        raise UserError(f"{run_dir} holds a run with {field}={old!r} but this sweep asks for {new!r}; use "
                        "another --out or the same settings", "--out")


def cell_argv(recipe_path, cell: dict, resume: bool) -> list[str]:
    if resume:
        return [sys.executable, "-m", "mupctl", "resume", cell["dir"]]
    sets = [arg for o in cell["overrides"] for arg in ("--set", o)]
    recipe = [] if recipe_path is None else [str(recipe_path)]
    return [sys.executable, "-m", "mupctl", "train", *recipe, *sets, "--run-dir", cell["dir"]]
