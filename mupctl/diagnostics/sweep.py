"""`mupctl sweep`: the LR-transfer sweep, size × LR × seed, each cell a real `mupctl train` run.

The cells (`cells`), their scheduler (`scheduler`), the statistics (`sweep_stats`) and the report
(`sweep_report`, `plots`) live in their own modules; this one validates the request and runs it.

`lr_key` is `optimizer.lr`, or `optimizer.muon.lr` for muon recipes (the Muon LR of the hidden
matrices), or any real-valued recipe field. Per size and LR: the mean over seeds of the val loss
(∞ if any seed diverged). Optimum per size: the best grid LR, refined by the parabola in log2 η
through it and its two neighbours. `shift_octaves` = max − min of log2 η* over sizes; under μP it
stays near 0, under SP it moves about −1 per width doubling (Tensor Programs V).

`--baseline none` (or `mup`, for a depth_mup sweep) also sweeps the recipe's twin under that
scaling recipe, same sizes and seeds, in the same scheduler, into OUT/baseline-<recipe>/; the main
report then carries `regret` (`sweep_stats.regret`): per size, the loss at the LR tuned at the
smallest size minus the baseline's best loss at that size.

Resumable: a finished cell (train and val rows at step N) or a diverged one (DIVERGED.json) is
skipped, an unfinished one is continued with `mupctl resume`, a missing one is trained.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mupctl.diagnostics.cells import cell_argv, cell_losses, cell_state, data_passes, plan_cells
from mupctl.diagnostics.coord_cli import choose_axis
from mupctl.diagnostics.reports import finite_json, write_json
from mupctl.diagnostics.scheduler import gpu_groups, note, run_jobs
from mupctl.diagnostics.sweep_report import write_markdown
from mupctl.diagnostics.sweep_stats import regret, summarize_cells
from mupctl.errors import RunFailure, UserError
from mupctl.launch.preflight import preflight
from mupctl.paths import check_dir
from mupctl.recipe import load_recipe
from mupctl.recipe.load import get_dotted
from mupctl.recipe.schema import MAX_FACTOR
from mupctl.scaling.compiler import depth_alpha, resolved_base

BASELINES = ("none", "mup")


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: a recipe (path and --set overrides), the size axis, the LR grid, seeds and steps."""

    recipe_path: object
    overrides: list[str]
    axis: str
    sizes: list[int]
    lrs: list[float]
    steps: int
    seeds: int
    out: Path
    lr_key: str | None = None


def check_request(lrs: list[float], steps: int, seeds: int, parallel: int | None, lr_key: str | None,
                  flag: str = "--lrs") -> None:
    if len(lrs) < 2 or any(not 0 < lr <= MAX_FACTOR for lr in lrs) or len(set(lrs)) < len(lrs):
        raise UserError(f"needs at least two distinct LRs in (0, {MAX_FACTOR:g}], got {lrs}", flag)
    for value, name in ((steps, "--steps"), (seeds, "--seeds")):
        if value <= 0:
            raise UserError(f"must be > 0, got {value}", name)
    if parallel is not None and parallel <= 0:
        raise UserError(f"must be > 0, got {parallel}", "--parallel")
    if lr_key is not None and not lr_key.strip():
        raise UserError("is empty; give a dotted recipe key such as optimizer.lr", "--lr-key")


def baseline_overrides(proxy, baseline: str) -> list[str]:
    """The --set overrides that turn the sweep's recipe into its baseline twin."""
    if baseline not in BASELINES:
        raise UserError(f"must be one of {', '.join(BASELINES)}, got {baseline!r}", "--baseline")
    ladder = ("none", "mup", "depth_mup")
    if ladder.index(baseline) >= ladder.index(proxy.scaling.recipe):
        raise UserError(f"compares the sweep's scaling recipe with a simpler one; this recipe is "
                        f"{proxy.scaling.recipe}, so use --baseline none"
                        + (" or mup" if proxy.scaling.recipe == "depth_mup" else "")
                        + (" (or sweep a mup recipe)" if proxy.scaling.recipe == "none" else ""), "--baseline")
    return [f"scaling.recipe={baseline}", "scaling.depth_alpha=null"]


def check_swept_key(recipe_path, overrides: list[str], key: str) -> None:
    """The swept key must be a real-valued recipe field (one that may default to None, such as
    model.init_std, counts): setting it to 0.5 must load and read back 0.5."""
    try:
        probe = get_dotted(load_recipe(recipe_path, list(overrides) + [f"{key}=0.5"]).model_dump(), key)
    except UserError:
        probe = None
    if type(probe) is not float:
        swept = get_dotted(load_recipe(recipe_path, overrides).model_dump(), key)
        raise UserError(f"{key} is not a real-valued recipe field (got {swept!r}); give optimizer.lr, "
                        "optimizer.muon.lr or another float such as optimizer.eps", "--lr-key")


def swept_key(proxy, lr_key: str | None) -> str:
    """--lr-key, else the LR of the hidden matrices: optimizer.muon.lr for muon, optimizer.lr otherwise."""
    return lr_key or ("optimizer.muon.lr" if proxy.optimizer.name == "muon" else "optimizer.lr")


def prepare(spec: SweepSpec, launch: bool = True) -> dict:
    """Validate one sweep and plan its cells (nothing runs or is written); `launch`: also the checks
    that need the machine and the data (`preflight`)."""
    proxy = load_recipe(spec.recipe_path, spec.overrides)
    lr_key = swept_key(proxy, spec.lr_key)
    check_swept_key(spec.recipe_path, spec.overrides, lr_key)
    cells, first = plan_cells(spec.recipe_path, spec.overrides, proxy, spec.axis, spec.sizes, spec.lrs,
                              spec.seeds, spec.steps, lr_key, spec.out)
    tokens = preflight(first).train_tokens if launch else None
    return {"spec": spec, "proxy": proxy, "lr_key": lr_key, "cells": cells, "first": first,
            "passes": data_passes(first, spec.steps, tokens), "train_tokens": tokens}


def run_cells(prepared: list[dict], parallel: int | None, gpus: list[int] | None, launch: bool = True) -> None:
    """Run every unfinished cell of the prepared sweeps in one scheduler (largest size first), then
    record each cell's status, losses and timing (launch=False: only record)."""
    groups = gpu_groups(prepared[0]["first"], gpus) if launch else []
    parallel = parallel or max(1, len(groups))
    jobs = []
    for p in prepared:
        for cell in p["cells"]:
            state = cell_state(Path(cell["dir"]), p["spec"].steps)
            cell["action"] = {"new": "launched", "partial": "resumed"}.get(state, "skipped")
            if cell["action"] != "skipped" and launch:
                jobs.append(cell | {"argv": cell_argv(p["spec"].recipe_path, cell, cell["action"] == "resumed"),
                                    "retry_argv": cell_argv(p["spec"].recipe_path, cell, True)})
    jobs.sort(key=lambda c: -c["size"])  # longest first
    total = sum(len(p["cells"]) for p in prepared)
    shapes = " + ".join(f"{len(p['cells'])} cells ({len(p['spec'].sizes)} sizes × {len(p['spec'].lrs)} LRs × "
                        f"{p['spec'].seeds} seeds)" for p in prepared)
    note(f"{shapes}: {len(jobs)} to run, {total - len(jobs)} finished or diverged before; {parallel} at a time"
         + (f" on GPUs {groups}" if groups else ""))
    run_jobs(jobs, parallel, groups)
    timing = {j["dir"]: j for j in jobs}
    for p in prepared:
        for cell in p["cells"]:
            state = cell_state(Path(cell["dir"]), p["spec"].steps)
            cell["status"] = state if state in ("done", "diverged") else "failed"
            cell |= cell_losses(Path(cell["dir"]), p["spec"].steps)
            cell |= {k: timing.get(cell["dir"], {}).get(k) for k in ("seconds", "gpus", "started", "ended")}


def assemble(p: dict) -> dict:
    """The report of one prepared sweep whose cells ran (non-finite losses still as floats)."""
    spec, proxy, cells = p["spec"], p["proxy"], p["cells"]
    counts = {k: sum(c["action"] == k for c in cells) for k in ("launched", "resumed", "skipped")} | \
        {k: sum(c["status"] == k for c in cells) for k in ("done", "diverged", "failed")}
    return {"name": proxy.name, "scaling_recipe": proxy.scaling.recipe, "depth_alpha": depth_alpha(proxy),
            "optimizer": proxy.optimizer.name,
            "recipe_path": None if spec.recipe_path is None else str(Path(spec.recipe_path).resolve()),
            "overrides": list(spec.overrides), "proxy_recipe": proxy.model_dump(mode="json"),
            "base": resolved_base(proxy), "axis": spec.axis, "sizes": spec.sizes, "lrs": spec.lrs,
            "seeds": spec.seeds, "steps": spec.steps, "lr_key": p["lr_key"], "data_passes": p["passes"],
            "counts": counts, "cells": cells, **summarize_cells(cells, spec.sizes, spec.lrs)}


def write_report(report: dict, out: Path) -> dict:
    """sweep.json, sweep.md and sweep.png in out, each with the verdict's caveats (`warnings`, those
    `tune` gives); returns the report with non-finite numbers as None."""
    from mupctl.diagnostics.plots import plot_sweep
    from mupctl.diagnostics.tune import caveats
    report = finite_json(report)
    report["warnings"] = caveats(report)
    write_json(out / "sweep.json", report)
    write_markdown(report, out / "sweep.md")
    plot_sweep(report, out / "sweep.png")
    return report


def run_sweeps(specs: list[SweepSpec], parallel: int | None = None, gpus: list[int] | None = None,
               baseline_of: dict[int, int] | None = None, launch: bool = True) -> list[dict]:
    """Run several sweeps' cells together and write each one's report. baseline_of: index of a
    sweep → index of its baseline twin, whose `regret` then goes into the first one's report.
    launch=False writes the reports from the cells on disk and runs nothing (unfinished cells count
    as failed). Raises RunFailure after writing the reports when cells failed other than by divergence."""
    from mupctl.diagnostics.plots import require_matplotlib
    require_matplotlib()
    prepared = [prepare(spec, launch) for spec in specs]
    passes, tokens = prepared[0]["passes"], prepared[0]["train_tokens"]
    if passes is not None and passes > 1:
        first, steps = prepared[0]["first"], specs[0].steps
        see = "watch for val_rose" if first.train.eval_interval < steps else \
            "set train.eval_interval below --steps so that val_rose can see it"
        note(f"each cell reads {passes:.1f}× its {tokens:,}-token training split; past one pass "
             f"the val loss can measure memorization ({see}; docs/diagnostics.md)")
    run_cells(prepared, parallel, gpus, launch)
    raw = [assemble(p) for p in prepared]
    for main, twin in (baseline_of or {}).items():
        raw[main]["baseline"] = {"scaling_recipe": raw[twin]["scaling_recipe"], "dir": str(specs[twin].out),
                                 "lrs": raw[twin]["lrs"]}
        raw[main]["regret"] = regret(raw[main], raw[twin])
    reports = [write_report(report, spec.out) for report, spec in zip(raw, specs)]  # caveats: in each report
    failed = [(spec.out, c["id"]) for spec, r in zip(specs, reports) for c in r["cells"] if c["status"] == "failed"]
    if failed:
        out, first = failed[0]
        raise RunFailure(f"{len(failed)} cell(s) failed (first: {first}); its log: {out / 'cells' / first / 'sweep.log'}; "
                         f"rerun the same command to retry them (the reports cover the rest)")
    return reports


def run_sweep(recipe_path, overrides: list[str], widths: list[int] | None, depths: list[int] | None,
              lrs: list[float], steps: int, seeds: int, out_dir, parallel: int | None = None,
              gpus: list[int] | None = None, lr_key: str | None = None, baseline: str | None = None,
              baseline_lrs: list[float] | None = None) -> dict:
    """Run (or continue) the sweep, and with `baseline` its twin under that scaling recipe (on
    `baseline_lrs`, default the same grid); write sweep.json, sweep.md, sweep.png in out_dir (the
    twin's in out_dir/baseline-<recipe>) and return the main report. parallel: cells at a time
    (default: one per GPU group, 1 on CPU). Raises RunFailure after writing the reports when cells
    failed other than by divergence (rerun the command to retry them)."""
    axis, sizes = choose_axis(widths, depths, min_sizes=1)  # one size: a plain LR sweep (tune small)
    check_request(lrs, steps, seeds, parallel, lr_key)
    if baseline_lrs is not None and baseline is None:
        raise UserError("is the grid of the baseline twin; add --baseline none", "--baseline-lrs")
    if baseline_lrs is not None:
        check_request(baseline_lrs, steps, seeds, parallel, lr_key, "--baseline-lrs")
    out = check_dir(Path(out_dir), "--out").resolve()
    main = SweepSpec(recipe_path, list(overrides), axis, sizes, sorted(lrs), steps, seeds, out, lr_key)
    if baseline is None:
        return run_sweeps([main], parallel, gpus)[0]
    twin = replace(main, overrides=main.overrides + baseline_overrides(load_recipe(recipe_path, overrides), baseline),
                   lrs=sorted(baseline_lrs or lrs), out=out / f"baseline-{baseline}")
    return run_sweeps([main, twin], parallel, gpus, baseline_of={0: 1})[0]
