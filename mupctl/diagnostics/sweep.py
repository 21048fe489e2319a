"""`mupctl sweep`: the LR-transfer sweep, size × LR × seed, each cell a real `mupctl train` run.

Cell (size s, LR η, seed k) = `mupctl train RECIPE --set … --run-dir OUT/cells/<id>` with the size
overrides of `coord_cli.size_overrides` (base pinned), `<lr_key>=η`, `train.seed=seed0+k`,
`train.steps=N`, `checkpoint.interval=0` (unless the user's `--set` says otherwise) and
`train.eval_interval=N` when the recipe disables validation. `lr_key` is `optimizer.lr`, or
`optimizer.muon.lr` for muon recipes (the Muon LR of the hidden matrices).

Per cell: final train loss = mean of the last ⌈10 %⌉ of the logged train losses; final val loss =
the val row at step N; val_rise = final val loss − the cell's best earlier eval (> 0.01 nats:
the cell memorizes repeated data or became unstable late; listed in `val_rose` and warned about).
Per size and LR: the mean over seeds of the val loss (∞ if any seed diverged). Optimum per size
(`fit_optimum`): the best grid LR, refined by the parabola in log2 η through it and its two
neighbours. `shift_octaves` = max − min of log2 η* over sizes; under μP it
stays near 0, under SP it moves about −1 per width doubling (Tensor Programs V). `drift_octaves`:
the same largest-minus-smallest difference with its sign, also per seed (`seed_drifts`).

Resumable: a finished cell (train and val rows at step N) or a diverged one (DIVERGED.json) is
skipped, an unfinished one is continued with `mupctl resume`, a missing one is trained.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mupctl.diagnostics.coord_cli import choose_axis, finite_json, recipe_label, sized_overrides, write_json
from mupctl.errors import RunFailure, UserError
from mupctl.launch.child import spawn
from mupctl.launch.launcher import changed_fields, preflight
from mupctl.metrics import read_jsonl
from mupctl.paths import check_dir
from mupctl.plan import build_plan
from mupctl.recipe import load_recipe
from mupctl.recipe.load import get_dotted
from mupctl.scaling.compiler import depth_alpha, resolved_base

POLL_S = 0.2
VAL_RISE_TOL = 0.01  # nats: a cell whose final val loss is this far above its own best eval memorizes


# -- pure math ------------------------------------------------------------------------------------

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
    return {"lr": 2.0 ** vertex, "log2_lr": float(vertex), "loss": float(a * vertex ** 2 + b * vertex + c),
            "at_edge": False, "fit": "parabola"}


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


# -- cells ----------------------------------------------------------------------------------------

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


# -- scheduling -----------------------------------------------------------------------------------

def gpu_groups(recipe, gpus: list[int] | None) -> list[list[str]]:
    """CUDA_VISIBLE_DEVICES values per slot group: `gpus` as given, else the visible devices (the
    parent's CUDA_VISIBLE_DEVICES entries, or 0..count−1); one group = launch.nproc_per_node GPUs.
    [] when the recipe runs on CPU or no GPU is visible."""
    if recipe.launch.device == "cpu":
        return []
    if gpus is None:
        import torch
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",")[:torch.cuda.device_count()] if visible else \
            [str(i) for i in range(torch.cuda.device_count())]
    else:
        ids = [str(g) for g in gpus]
    n = recipe.launch.nproc_per_node
    if ids and len(ids) < n:
        raise UserError(f"each cell needs launch.nproc_per_node = {n} GPUs, only {len(ids)} given", "--gpus")
    return [ids[i:i + n] for i in range(0, len(ids) - n + 1, n)]


def slot_env(slot: int, groups: list[list[str]], parallel: int) -> dict:
    """The child's environment: its GPU group (slot mod #groups, so parallel > #groups packs cells
    per GPU); on CPU, the cores split between the running cells unless OMP_NUM_THREADS is set."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if groups:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[slot % len(groups)])
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def run_jobs(jobs: list[dict], parallel: int, groups: list[list[str]]) -> None:
    """Run jobs ({"argv", "dir"}) `parallel` at a time; sets job["rc"], job["seconds"], job["gpus"] (the
    CUDA_VISIBLE_DEVICES it gave the job, None on CPU) and job["started"] / job["ended"] (time.time()).
    Output goes to <dir>/sweep.log. On Ctrl-C, SIGTERM or an error the running children get SIGTERM, once:
    they run in their own sessions, so a terminal's Ctrl-C does not reach them too (launch.child)."""
    pending, running = list(jobs), {}
    old_term = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        while pending or running:
            for slot in range(parallel):
                if slot not in running and pending:
                    job = pending.pop(0)
                    Path(job["dir"]).mkdir(parents=True, exist_ok=True)
                    env = slot_env(slot, groups, parallel)
                    job["gpus"], job["started"] = env["CUDA_VISIBLE_DEVICES"] if groups else None, time.time()
                    with open(Path(job["dir"]) / "sweep.log", "a") as log:
                        proc = spawn(job["argv"], stdout=log, stderr=subprocess.STDOUT, env=env)
                    running[slot] = (job, proc, time.perf_counter())
            for slot, (job, proc, t0) in list(running.items()):
                if proc.poll() is not None:
                    job["rc"], job["seconds"] = proc.returncode, round(time.perf_counter() - t0, 2)
                    job["ended"] = time.time()
                    del running[slot]
                    note(f"{job['id']}: exit {job['rc']} after {job['seconds']} s")
            time.sleep(POLL_S)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        for _, proc, _ in running.values():
            proc.terminate()
        for _, proc, _ in running.values():
            proc.wait()


def note(message: str) -> None:
    """Progress for people and agents on stderr (stdout stays clean for --json)."""
    print(f"mupctl sweep: {message}", file=sys.stderr, flush=True)


# -- report ---------------------------------------------------------------------------------------

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


def seed_drifts(cells: list[dict], sizes: list[int], lrs: list[float]) -> list[dict]:
    """Per seed, `drift` of that seed's own curves: [{"seed", "drift_octaves"}]; [] with one seed."""
    seeds = sorted({c["seed"] for c in cells})
    if len(seeds) < 2:
        return []
    out = []
    for seed in seeds:
        mine = [c for c in cells if c["seed"] == seed]
        fits = [fit_optimum(lrs, [group[0]["final_val_loss"] if group else math.inf for group in row])
                for row in group_cells(mine, sizes, lrs)]
        out.append({"seed": seed, "drift_octaves": drift(fits)})
    return out


def group_cells(cells: list[dict], sizes: list[int], lrs: list[float]) -> list[list[list[dict]]]:
    """groups[i][j]: the cells (one per seed) of size sizes[i] and LR lrs[j]."""
    return [[[c for c in cells if c["size"] == size and c["lr"] == lr] for lr in lrs] for size in sizes]


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


def add_transfer_cost(curves: list[dict]) -> None:
    """curve["transfer_cost"] = L(η₀) − min L: the val loss a size loses when trained at the smallest
    size's best grid LR η₀ (tune small, launch big) instead of at its own best grid LR; 0 at the
    smallest size; ∞ (null in sweep.json) where η₀ diverged; None when a size has no finite loss
    or only one size was swept."""
    j = grid_best(curves[0]["val_loss"]) if len(curves) > 1 else None  # one size: nothing to transfer to
    for curve in curves:
        val, best = curve["val_loss"], grid_best(curve["val_loss"])
        curve["transfer_cost"] = None if j is None or best is None else val[j] - val[best]


def write_markdown(report: dict, path: Path) -> None:
    """sweep.md: mean val loss per size × LR (best in bold, — = diverged), optima, shift, wider-is-better,
    and a warning when cells memorize (`val_rose`)."""
    lrs = report["lrs"]
    lines = [f"# LR sweep: {report['name']} ({recipe_label(report)}, {report['optimizer']}) over "
             f"{report['axis']}", "",
             f"{report['steps']} steps, {report['seeds']} seed(s); mean val loss after the last step; "
             f"LR key `{report['lr_key']}`.", "",
             "| " + " | ".join([report["axis"], *(f"{lr:g}" for lr in lrs), "optimum η*", "log2 η*", "fit",
                                 "loss at the smallest size's best LR"]) + " |",
             "|" + " --- |" * (len(lrs) + 5)]
    for curve in report["curves"]:
        opt = curve["optimum"]
        best = min((v for v in curve["val_loss"] if v is not None), default=None)
        cells = ["—" if v is None else (f"**{v:.4f}**" if v == best else f"{v:.4f}") for v in curve["val_loss"]]
        where = "—" if opt["lr"] is None else f"{opt['lr']:.3g}" + (" (grid edge)" if opt["at_edge"] else "")
        log2 = "—" if opt["log2_lr"] is None else f"{opt['log2_lr']:.2f}"
        cost = curve["transfer_cost"]
        cost = "—" if cost is None else f"+{cost:.4f}"
        lines.append("| " + " | ".join([str(curve["size"]), *cells, where, log2, opt["fit"], cost]) + " |")
    shift, wib = report["shift_octaves"], report["wider_is_better"]
    checked = ", ".join(f"{row['lr']:g}: {row['ok']}" for row in wib["by_lr"])
    lines += [""] + ([f"- optimum shift across sizes: {'n/a' if shift is None else f'{shift:.2f} octaves'}"
                      + shift_interval_text(report), drift_text(report),
                      f"- {'wider' if report['axis'] == 'width' else 'deeper'} is better at every LR within "
                      f"±1 octave of the optima: {wib['ok']} ({checked})"]
                     if len(report["sizes"]) > 1 else ["- one size: an LR sweep, no shift or size check"]) + \
        [f"- cells: {report['counts']}"]
    if report["seed_sd"] is not None:
        lines.append(f"- seed-to-seed standard deviation of a cell's val loss: {report['seed_sd']:.4f} nats")
    if report["data_passes"] is not None:
        lines.append(f"- passes over the training split per cell: {report['data_passes']:.2f}")
    if report["val_rose"]["cells"]:
        lines.append(f"- **warning:** {memorization_warning(report)}")
    path.write_text("\n".join(lines + [""]))


def shift_interval_text(report: dict) -> str:
    """' (90% seed-bootstrap interval 0.21–1.93)' after the shift, or '' without one."""
    ci = report.get("shift_interval")
    return "" if ci is None else \
        f" ({ci['level']:.0%} seed-bootstrap interval {ci['low']:.2f}–{ci['high']:.2f})"


def drift_text(report: dict) -> str:
    """'- signed drift, smallest → largest size: +0.34 octaves (per seed: +1.03, -0.94)'."""
    def signed(value):
        return "n/a" if value is None else f"{value:+.2f}"
    per_seed = [signed(d["drift_octaves"]) for d in report.get("seed_drifts", [])]
    return (f"- signed drift, smallest → largest size: {signed(report.get('drift_octaves'))} octaves"
            + (f" (per seed: {', '.join(per_seed)})" if per_seed else ""))


def memorization_warning(report: dict) -> str:
    """The one sentence that flags cells whose val loss rose at the end (see `cell_losses`)."""
    rose = report["val_rose"]
    return (f"val loss rose at the end of {len(rose['cells'])} of {len(report['cells'])} cells (up to "
            f"{rose['max']:.3f} nats above the cell's own best eval, first: {rose['cells'][0]}): the model "
            f"memorizes repeated data (or became unstable late), so these losses rank LRs by how little they "
            f"fit; train on more data (data.source: bin) or for fewer --steps")


def run_sweep(recipe_path, overrides: list[str], widths: list[int] | None, depths: list[int] | None,
              lrs: list[float], steps: int, seeds: int, out_dir, parallel: int | None = None,
              gpus: list[int] | None = None, lr_key: str | None = None) -> dict:
    """Run (or continue) the sweep; write sweep.json, sweep.md, sweep.png in out_dir and return the
    report. parallel: cells at a time (default: one per GPU group, 1 on CPU). Raises RunFailure after
    writing the report when cells failed other than by divergence (rerun the command to retry them)."""
    from mupctl.diagnostics.plots import plot_sweep, require_matplotlib

    axis, sizes = choose_axis(widths, depths, min_sizes=1)  # one size: a plain LR sweep (tune small)
    if len(lrs) < 2 or any(not 0 < lr <= 1e6 for lr in lrs) or len(set(lrs)) < len(lrs):
        raise UserError(f"needs at least two distinct LRs in (0, 1e6], got {lrs}", "--lrs")
    for value, flag in ((steps, "--steps"), (seeds, "--seeds")):
        if value <= 0:
            raise UserError(f"must be > 0, got {value}", flag)
    if parallel is not None and parallel <= 0:
        raise UserError(f"must be > 0, got {parallel}", "--parallel")
    if lr_key is not None and not lr_key.strip():
        raise UserError("is empty; give a dotted recipe key such as optimizer.lr", "--lr-key")
    require_matplotlib()
    lrs, out = sorted(lrs), check_dir(Path(out_dir), "--out").resolve()
    proxy = load_recipe(recipe_path, overrides)
    lr_key = lr_key or ("optimizer.muon.lr" if proxy.optimizer.name == "muon" else "optimizer.lr")
    swept = get_dotted(proxy.model_dump(), lr_key)
    if type(swept) is not float:
        raise UserError(f"{lr_key} is not a real-valued recipe field (got {swept!r}); give optimizer.lr, "
                        "optimizer.muon.lr or another float such as optimizer.eps", "--lr-key")
    cells, first = plan_cells(recipe_path, overrides, proxy, axis, sizes, lrs, seeds, steps, lr_key, out)
    groups = gpu_groups(first, gpus)
    data = preflight(first)
    passes = data_passes(first, steps, data.train_tokens)
    if passes is not None and passes > 1:
        see = "watch for val_rose" if first.train.eval_interval < steps else \
            "set train.eval_interval below --steps so that val_rose can see it"
        note(f"each cell reads {passes:.1f}× its {data.train_tokens:,}-token training split; past one pass "
             f"the val loss can measure memorization ({see}; docs/diagnostics.md)")
    parallel = parallel or max(1, len(groups))

    for cell in cells:
        cell["action"] = {"new": "launched", "partial": "resumed"}.get(cell_state(Path(cell["dir"]), steps), "skipped")
    jobs = sorted((c | {"argv": cell_argv(recipe_path, c, c["action"] == "resumed")}
                   for c in cells if c["action"] != "skipped"), key=lambda c: -c["size"])  # longest first
    note(f"{len(cells)} cells ({len(sizes)} sizes × {len(lrs)} LRs × {seeds} seeds): {len(jobs)} to run, "
         f"{len(cells) - len(jobs)} finished or diverged before; {parallel} at a time"
         + (f" on GPUs {groups}" if groups else ""))
    run_jobs(jobs, parallel, groups)
    timing = {j["id"]: j for j in jobs}
    for cell in cells:
        run_dir = Path(cell["dir"])
        state = cell_state(run_dir, steps)
        cell["status"] = state if state in ("done", "diverged") else "failed"
        cell |= cell_losses(run_dir, steps)
        cell |= {k: timing.get(cell["id"], {}).get(k) for k in ("seconds", "gpus", "started", "ended")}

    counts = {k: sum(c["action"] == k for c in cells) for k in ("launched", "resumed", "skipped")} | \
        {k: sum(c["status"] == k for c in cells) for k in ("done", "diverged", "failed")}
    report = {"name": proxy.name, "scaling_recipe": proxy.scaling.recipe, "depth_alpha": depth_alpha(proxy),
              "optimizer": proxy.optimizer.name,
              "recipe_path": None if recipe_path is None else str(Path(recipe_path).resolve()),
              "overrides": list(overrides), "proxy_recipe": proxy.model_dump(mode="json"),
              "base": resolved_base(proxy), "axis": axis, "sizes": sizes, "lrs": lrs, "seeds": seeds,
              "steps": steps, "lr_key": lr_key, "data_passes": passes, "counts": counts, "cells": cells,
              **summarize_cells(cells, sizes, lrs)}
    write_json(out / "sweep.json", report)
    report = finite_json(report)
    write_markdown(report, out / "sweep.md")
    if report["val_rose"]["cells"]:
        note(memorization_warning(report))
    plot_sweep(report, out / "sweep.png")
    if counts["failed"]:
        failed = [c["id"] for c in cells if c["status"] == "failed"]
        raise RunFailure(f"{len(failed)} cell(s) failed (first: {failed[0]}); its log: "
                         f"{out / 'cells' / failed[0] / 'sweep.log'}; rerun the same command to retry them "
                         f"(the report in {out} covers the rest)")
    return report
