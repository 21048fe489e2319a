"""No-regret evidence on a GPU (issue 22): does the model launched at the LR tuned at the base width
end as good as the standard-parameterization (SP) model tuned at its own width?

    python benchmarks/regret.py --work DIR --data CORPUS_DIR PHASE [PHASE ...] [--seeds 2] [--parallel 14]

Proxies: recipes/sweeps/regret-gpt2.yaml (LayerNorm, learned positions, GELU, tied) and
regret-llama.yaml (RMSNorm, RoPE, SwiGLU, untied), base width 256, trained on CORPUS_DIR (a
`mupctl data prepare` directory, e.g. from benchmarks/code_corpus.py). Phases, each one
`mupctl.diagnostics.sweep.run_sweeps` call (all its cells in one scheduler; finished cells skipped):

- `base`: the recipe (`--recipe`, default mup) at width 256 over the grid 2^k, k in `--grid LO,HI`.
- `width`: the recipe at widths 256..2048 over η₀·2^{-1,0,1} and its SP twin (`scaling.recipe:
  none`) over η₀·2^{-4..0} at the widths above the base (at the base the twin is the same model:
  same σ, all multipliers 1), η₀ = the base sweep's grid point nearest its fitted optimum; the
  recipe's report carries the regret against the twin (`sweep.json` "regret").
- `depth`: `depth_mup` at depths `--depths` (width 256) over η₀·2^{-1,0,1}, against `mup` re-tuned at
  each depth above the base over η₀·2^{-3..1} (at base depth 4 the two are the same model, so the
  base sweep's η₀ is theirs); the `depth_mup` report carries the regret (depth μP's question: is
  the deep model launched at the LR tuned shallow as good as width-only μP re-tuned at that depth?).
- `ablate`: each μP choice turned back to its SP form at the target widths --ablate-widths, one at a
  time, at η₀ only (at the base every variant is the same model, so η₀ is theirs too). The SP form
  at width multiplier m, emulated with the recipe's per-role constants:
  wd: hidden wd_mult 1/m; emb_lr: embedding lr_mult 1/m; out_sp: alpha_out m and output lr_mult 1/m
  (tied: alpha_out m); zero_readout: readout_zero_init; init: hidden init_mult √m; eps: eps_mult m;
  vector_lr: vector lr_mult 1/m. Writes ablation-<proxy>.md/.json to --report-dir.
`--extra` adds --set overrides to every cell of every phase (e.g. a candidate fix, or
`optimizer.name=muon`: the swept LR is then `optimizer.muon.lr`, and the `base` and `width` phases give Muon's
regret against SP with Muon), `--tag` names the sweeps so that such a run sits next to the others
(write `--tag=-x`, `--grid=-12,-6`: values that start with a dash need the `=`). `--report-only` writes the reports from the
cells on disk without launching anything.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mupctl.diagnostics.cells import cell_id, cell_losses, cell_state
from mupctl.diagnostics.sweep import SweepSpec, run_sweeps
from mupctl.diagnostics.sweep_stats import fit_optimum
from mupctl.errors import RunFailure

ROOT = Path(__file__).resolve().parents[1]
PROXIES = {"gpt2": ROOT / "recipes/sweeps/regret-gpt2.yaml", "llama": ROOT / "recipes/sweeps/regret-llama.yaml"}
BASE = 256


def variants(proxy: str, m: float) -> dict[str, list[str]]:
    """Ablation name → the --set overrides that give one μP choice its SP form at width multiplier m."""
    hidden = ("hidden", "hidden_out")
    out = {"wd": [f"scaling.wd_mult.{r}={1 / m!r}" for r in hidden],
           "emb_lr": [f"scaling.lr_mult.embedding={1 / m!r}"],
           "init": [f"scaling.init_mult.{r}={math.sqrt(m)!r}" for r in hidden],
           "eps": [f"scaling.eps_mult.{r}={float(m)!r}" for r in ("embedding", *hidden, "vector")
                   + (() if proxy == "gpt2" else ("output",))],
           "vector_lr": [f"scaling.lr_mult.vector={1 / m!r}"]}
    if proxy == "gpt2":  # tied: the head is the embedding tensor; only its logit multiplier is separate
        out["out_sp"] = [f"scaling.alpha_out={float(m)!r}"]
    else:
        out["out_sp"] = [f"scaling.alpha_out={float(m)!r}", f"scaling.lr_mult.output={1 / m!r}"]
        out["zero_readout"] = ["scaling.readout_zero_init=true"]
    return out


def spec(args, proxy: str, name: str, overrides: list[str], sizes: list[int], lrs: list[float],
         seeds: int, axis: str = "width") -> SweepSpec:
    data = [f"data.source=bin", f"data.path={args.data}"]
    return SweepSpec(PROXIES[proxy], data + args.extra + overrides, axis, sizes, sorted(lrs), args.steps, seeds,
                     Path(args.work) / f"{proxy}-{name}{args.tag}")


def recipe_overrides(args) -> list[str]:
    return [f"scaling.recipe={args.recipe}"]


def eta0(args, proxy: str) -> float:
    """The grid LR nearest the fitted optimum of the base sweep's mean curve."""
    report = json.loads((Path(args.work) / f"{proxy}-base{args.tag}" / "sweep.json").read_text())
    opt = fit_optimum(report["lrs"], [math.inf if v is None else v for v in report["curves"][0]["val_loss"]])
    return min(args.grid, key=lambda lr: abs(math.log2(lr) - opt["log2_lr"]))


def near(lr: float, lo: int, hi: int) -> list[float]:
    return [lr * 2.0 ** k for k in range(lo, hi + 1)]


def run(args, specs: list[SweepSpec], baseline_of=None) -> None:
    try:
        run_sweeps(specs, args.parallel, None, baseline_of, launch=not args.report_only)
    except RunFailure as err:
        print(f"regret.py: {err}", file=sys.stderr)


def phase_base(args) -> None:
    run(args, [spec(args, p, "base", recipe_overrides(args), [BASE], args.grid, args.seeds) for p in args.proxies])


def run_with_twin(args, axis: str, sizes: list[int], mine: tuple, twin: tuple, twin_lrs: tuple[int, int]) -> None:
    """Per proxy, around its η₀: `mine` = (name, overrides) over η₀·2^{-1,0,1} at every size, and its
    `twin` over η₀·2^{twin_lrs} at the sizes above the base (at the base the two are the same model);
    `mine`'s report carries the regret against the twin."""
    specs, pairs = [], {}
    for p in args.proxies:
        e = eta0(args, p)
        pairs[len(specs)] = len(specs) + 1
        specs.append(spec(args, p, *mine, sizes, near(e, -1, 1), args.seeds, axis))
        specs.append(spec(args, p, *twin, sizes[1:], near(e, *twin_lrs), args.seeds, axis))
    run(args, specs, pairs)


def phase_width(args) -> None:
    run_with_twin(args, "width", args.widths, ("width", recipe_overrides(args)), ("width-none", ["scaling.recipe=none"]),
                  (-4, 0))


def phase_depth(args) -> None:
    run_with_twin(args, "depth", args.depths, ("depth", ["scaling.recipe=depth_mup"]),
                  ("depth-mup", ["scaling.recipe=mup"]), (-3, 1))


def phase_ablate(args) -> None:
    specs = []
    for p in args.proxies:
        e = eta0(args, p)
        for w in args.ablate_widths:
            for name, sets in variants(p, w / BASE).items():
                specs.append(spec(args, p, f"ablate-{name}-w{w}", recipe_overrides(args) + sets, [w], [e],
                                  args.seeds))
    run(args, specs)
    for p in args.proxies:
        ablation_table(args, p)


def loss(run_dir: Path, steps: int) -> float | None:
    return cell_losses(run_dir, steps)["final_val_loss"] if cell_state(run_dir, steps) in ("done", "diverged") else None


def ablation_table(args, proxy: str) -> None:
    """Per target width and variant, seed by seed: the val loss at η₀, its change from mup at η₀
    (paired: same seed, same data order), and the regret against SP's best at that width."""
    work, e = Path(args.work), eta0(args, proxy)
    none = work / f"{proxy}-width-none{args.tag}" / "sweep.json"
    sp = json.loads(none.read_text()) if none.exists() else None
    rows = []
    for w in args.ablate_widths:
        sp_best = None
        if sp:
            curve = next(c for c in sp["curves"] if c["size"] == w)
            sp_best = fit_optimum(sp["lrs"], [math.inf if v is None else v for v in curve["val_loss"]])["loss"]
        for seed in range(args.seeds):
            ref = loss(work / f"{proxy}-width{args.tag}" / "cells" / cell_id("width", w, e, seed), args.steps)
            for name in ["mup", *variants(proxy, w / BASE)]:
                sweep = f"width{args.tag}" if name == "mup" else f"ablate-{name}-w{w}{args.tag}"
                value = loss(work / f"{proxy}-{sweep}" / "cells" / cell_id("width", w, e, seed), args.steps)
                rows.append({"width": w, "seed": seed, "variant": name, "val_loss": value,
                             "delta_vs_mup_at_eta0": None if value is None or ref is None else value - ref,
                             "regret_vs_sp": None if value is None or sp_best is None else value - sp_best})
    out = Path(args.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ablation-{proxy}{args.tag}.json").write_text(json.dumps({"eta0": e, "rows": rows}, indent=1) + "\n")
    fmt = lambda v: "—" if v is None else f"{v:+.4f}"
    lines = [f"# Ablation, {proxy} proxy: each μP choice in its SP form (η₀ = {e:g})", "",
             "| width | variant | seed | val loss at η₀ | Δ vs mup | regret vs SP best |", "|" + " --- |" * 6]
    lines += [f"| {r['width']} | {r['variant']} | {r['seed']} | "
              f"{'—' if r['val_loss'] is None else format(r['val_loss'], '.4f')} | "
              f"{fmt(r['delta_vs_mup_at_eta0'])} | {fmt(r['regret_vs_sp'])} |" for r in rows]
    (out / f"ablation-{proxy}{args.tag}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phases", nargs="+", choices=["base", "width", "depth", "ablate"])
    parser.add_argument("--work", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--report-dir", default="regret-reports")
    parser.add_argument("--proxies", default="llama,gpt2")
    parser.add_argument("--recipe", default="mup")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=14)
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--tag", default="")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--grid", default="-15,-7", help="the base phase's LRs 2^k, k = LO..HI inclusive (write --grid=-12,-6)")
    parser.add_argument("--widths", default="256,512,1024,2048", help="the width phase's sizes (the first is the base)")
    parser.add_argument("--depths", default="4,8,16,32", help="the depth phase's depths (the first is the base)")
    parser.add_argument("--ablate-widths", default="512,1024")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.proxies = args.proxies.split(",")
    lo, hi = (int(k) for k in args.grid.split(","))
    args.grid = [2.0 ** k for k in range(lo, hi + 1)]
    args.widths = [int(w) for w in args.widths.split(",")]
    args.ablate_widths = [int(w) for w in args.ablate_widths.split(",")]
    args.depths = [int(d) for d in args.depths.split(",")]
    for phase in args.phases:
        {"base": phase_base, "width": phase_width, "depth": phase_depth, "ablate": phase_ablate}[phase](args)


if __name__ == "__main__":
    main()
