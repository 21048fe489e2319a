"""Tune small, launch big: turn a finished sweep into the recipe of the target model.

The emitted recipe is the sweep's proxy recipe (the recipe plus the sweep's `--set` overrides) with
- `scaling.base` = the base shape the sweep ran with, written out in full (d_model, n_layers,
  d_head). η means "the LR at the base shape": every per-role LR and init of a swept model was
  derived from it through m = d_model / base.d_model and λ = n_layers / base.n_layers. Rebasing to
  another shape would change those (hidden LR η/m against embedding LR η under mup), so no single
  η would reproduce the measured models; the base is kept and the target gets m = target / base.
- the LR key of the sweep (`optimizer.lr`, or `optimizer.muon.lr` for muon) = the optimum η*
  measured at the reference size: the largest swept size. It is the closest to the target (the
  shortest extrapolation), finite-size drift of the optimum is smallest there, and under exact
  transfer every size gives the same η*, so nothing is lost by choosing it.
- the target's overrides last (`model.d_model=4096`, `train.steps=…`). A new `model.d_model` keeps
  the swept head size (and the d_ff / n_kv_heads ratios) unless the overrides set those too.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mupctl.diagnostics.sweep_report import memorization_warning, regret_text
from mupctl.errors import UserError
from mupctl.paths import atomic_write, check_file
from mupctl.plan import build_plan
from mupctl.recipe import load_recipe, recipe_to_yaml
from mupctl.recipe.load import apply_overrides, get_dotted
from mupctl.scaling.compiler import resolved_base
from mupctl.scaling.sizes import base_overrides, size_overrides

# Tensor Programs V: below these, optima are loose and transfer is not established (DESIGN.md).
SIGNAL = {"width": 256, "depth": 4, "global_batch": 32, "seq_len": 128, "steps": 1000}


REPORT_KEYS = ("name", "axis", "sizes", "curves", "reference_size", "lr_key", "proxy_recipe", "base",
               "shift_octaves", "scaling_recipe", "steps")


def read_sweep(sweep) -> dict:
    """sweep.json, given the sweep directory or the file itself."""
    path = Path(sweep)
    path = path / "sweep.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"no sweep report at {path} (run `mupctl sweep … --out DIR` first)", "SWEEP_DIR")
    try:
        report = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a sweep report ({type(exc).__name__}); rerun `mupctl sweep` with the same "
                        "--out to rewrite it (finished cells are kept)", "SWEEP_DIR") from None
    missing = [k for k in REPORT_KEYS if k not in report] if isinstance(report, dict) else list(REPORT_KEYS)
    if not missing:  # the fields whose wrong type would not fail on their own
        missing = [k for k, ok in (("axis", report["axis"] in ("width", "depth")),
                                   ("sizes", isinstance(report["sizes"], list)
                                    and all(type(s) is int for s in report["sizes"])),
                                   ("scaling_recipe", report["scaling_recipe"] in ("none", "mup", "depth_mup")),
                                   ("base", isinstance(report["base"], dict)
                                    and set(report["base"]) == {"d_model", "n_layers", "d_head"})) if not ok]
    if missing:
        raise UserError(f"{path} is not a sweep report (missing or malformed: {', '.join(missing)}); rerun "
                        "`mupctl sweep` with the same --out to rewrite it", "SWEEP_DIR")
    return report


def check_target(out_path, force: bool, targets: list[str], field: str, proxy=None, tuned: tuple = ()) -> Path:
    """Before any work: the target recipe can be written at out_path, the --target overrides parse and
    set none of the `tuned` keys (the values the command measures and writes itself); with the sweep's
    `proxy` recipe (a sweep about to run), the target it would emit also validates and plans (with the
    proxy's own LR standing in for the measured one)."""
    out = check_file(Path(out_path), field)
    if out.exists() and not force:
        raise UserError(f"{out} exists; pick another path or pass --force to overwrite it", field)
    parsed = parse_targets(targets)
    for key in tuned:
        if get_dotted(parsed, key) is not None:
            raise UserError(f"sets {key}, the value this command tunes and writes itself; drop it from --target",
                            "--target")
    if proxy is not None:
        build_plan(target_recipe(proxy.model_dump(mode="json"), resolved_base(proxy), targets))
    return out


def target_recipe(proxy_raw: dict, base: dict, targets: list[str], lr: list[str] = ()):
    """The target `Recipe` (module docstring): the proxy with its base written out, then the `lr`
    override ("key=value", or none), then the targets."""
    proxy = load_recipe(raw=proxy_raw)
    return load_recipe(raw=proxy_raw, overrides=base_overrides(base) + list(lr)
                       + target_model_overrides(proxy, targets) + list(targets))


def parse_targets(targets: list[str]) -> dict:
    """The --target overrides as a nested dict (bad syntax is a `UserError` naming --target)."""
    try:
        return apply_overrides({}, targets)
    except UserError as err:
        raise UserError(str(err).removeprefix("--set: "), "--target") from None


def target_model_overrides(proxy, targets: list[str]) -> list[str]:
    """Keep the swept head size (and d_ff / n_kv_heads ratios) when the targets set model.d_model."""
    model = parse_targets(targets).get("model")
    d_model = model.get("d_model") if isinstance(model, dict) else None
    return size_overrides(proxy, "width", d_model, "--target") if isinstance(d_model, int) and d_model > 0 else []


def caveats(report: dict) -> list[str]:
    """What makes a sweep's verdict and the LR tune emits from it less trustworthy, one line each (`sweep`
    prints them with its verdict, writes them into sweep.json and onto sweep.png; `tune` with its recipe)."""
    out = []
    if report["scaling_recipe"] == "none":
        out.append("scaling.recipe is none: SP hyperparameters do not transfer across sizes; the LR is only "
                   "the optimum at the reference size")
    empty = [str(c["size"]) for c in report["curves"] if c["optimum"]["lr"] is None]
    if empty:
        out.append(f"no cell finished without diverging at {report['axis']} {', '.join(empty)}: there is no optimum "
                   "there; lower --lrs (or read the failed cells' train.log) and rerun the sweep")
    edges = [f"{report['axis']} {c['size']} ({c['optimum']['lr']:g})" for c in report["curves"]
             if c["optimum"]["at_edge"]]
    if edges:
        out.append(f"the optimum is at the edge of the LR grid at {', '.join(edges)}: the true optimum may lie "
                   "beyond it, so the optimum and its shift are bounds, not measurements; extend --lrs past it "
                   "and rerun the sweep (finished cells are kept)")
    if (report["shift_octaves"] or 0) > 1:
        out.append(f"the optimum moved {report['shift_octaves']:.2f} octaves across the swept sizes: transfer "
                   "is not established at these sizes")
    interval = report.get("shift_interval")  # absent in sweep.json files written before it existed
    if interval and interval["high"] > 1 >= (report["shift_octaves"] or 0):
        out.append(f"the seeds alone move the optimum shift up to {interval['high']:.2f} octaves "
                   f"({interval['level']:.0%} seed-bootstrap interval): rerun with more --seeds to establish transfer")
    if len(report["sizes"]) < 2:
        out.append(f"one {report['axis']} was swept: transfer to other sizes was not measured; sweep at least two "
                   "sizes to check it")
    if report.get("val_rose", {}).get("cells"):  # absent in sweep.json files written before it existed
        out.append(memorization_warning(report))
    return out + small_proxy(report["axis"], report["reference_size"], report["proxy_recipe"], report["steps"]) \
        + untuned_init(report["proxy_recipe"], report["base"])


def untuned_init(proxy_raw: dict, base: dict) -> list[str]:
    """A σ more than 2× away from the base's fan-in scale 1/√(base d_model) (e.g. GPT-2's 0.02 at a 256-wide
    base) was most likely not tuned there; μP carries it to every width (docs/results round 14). Not
    under `none`, which carries no base σ."""
    sigma, lecun = proxy_raw["model"]["init_std"], base["d_model"] ** -0.5
    if sigma is None or proxy_raw["scaling"]["recipe"] == "none" or 0.5 <= sigma / lecun <= 2:
        return []
    return [f"model.init_std {sigma:g} is {sigma / lecun:.2g}x the base's fan-in scale 1/sqrt({base['d_model']}) = "
            f"{lecun:.3g}: unless it was tuned at the base, tune it there (mupctl tune-base), since mup carries the "
            "base init to every width"]


def small_proxy(axis: str, size: int, proxy_raw: dict, steps: int) -> list[str]:
    """The caveat of a proxy below Tensor Programs V's signal sizes (`SIGNAL`), or none."""
    train, model = proxy_raw["train"], proxy_raw["model"]
    small = [f"{k} {v} < {SIGNAL[k]}" for k, v in ((axis, size), ("global_batch", train["global_batch"]),
                                                     ("seq_len", model["seq_len"]), ("steps", steps)) if v < SIGNAL[k]]
    return [f"small proxy ({', '.join(small)}): optima are loose below these (Tensor Programs V)"] if small else []


def depth_caveats(report: dict, target) -> list[str]:
    """What the target's depth does to the emitted LR: depth beyond the swept reference is covered only
    by depth_mup, and under AdamW/Adam with an annealed schedule our depth sweeps saw the best peak LR
    rise 0.3–0.45 octave per depth doubling (docs/results rounds 7 and 13; constant LR: no drift)."""
    ref = report["reference_size"] if report["axis"] == "depth" else report["proxy_recipe"]["model"]["n_layers"]
    depth, recipe = target.model.n_layers, target.scaling.recipe
    if depth == ref or recipe == "none":  # SP has its own caveat
        return []
    if recipe == "mup":
        return [f"the target has {depth} layers and the reference {ref}: scaling.recipe mup has no depth rule, so "
                "the LR is not expected to transfer over depth (use depth_mup, or sweep at the target depth)"]
    if depth > 2 * ref and target.optimizer.name in ("adamw", "adam") and target.schedule.name != "constant":
        return [f"the target is {depth / ref:g}x deeper than the reference ({ref} layers) and the schedule anneals "
                f"({target.schedule.name}): under depth_mup + {target.optimizer.name} the best peak LR rose 0.3-0.45 "
                "octave per depth doubling in our annealed sweeps (docs/scaling.md); try the grid LRs just above "
                "this one at the target depth"]
    return []


def write_target(out: Path, header: list[str], recipe) -> None:
    """The target recipe file: the comment header, then the recipe as YAML; the text must load and
    plan again before it replaces `out` (atomically)."""
    text = "\n".join(header) + "\n" + recipe_to_yaml(recipe)
    build_plan(load_recipe(raw=yaml.safe_load(text)))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text)


def emit_recipe(sweep, target_overrides: list[str], out_path, force: bool = False, field: str = "--out") -> dict:
    """Write the target recipe (module docstring) to out_path after checking that it loads and plans;
    never overwrite an existing file unless `force`. Returns {"path", "lr_key", "lr", "reference_size",
    "axis", "base", "shift_octaves", "at_edge", "warnings", "regret"} (regret: the sweep's `regret`
    against its baseline twin, None for a sweep without --baseline; also written into the header)."""
    report = read_sweep(sweep)
    out = check_target(out_path, force, target_overrides, field, tuned=(report["lr_key"],))
    try:  # a sweep.json edited by hand or written by something else fails here, as bad input
        ref = next(c for c in report["curves"] if c["size"] == report["reference_size"])
        opt = ref["optimum"]
        if opt["lr"] is None:
            raise UserError(f"every cell at the reference size {report['reference_size']} diverged or failed; "
                            "nothing to transfer (lower --lrs and rerun the sweep)", "SWEEP_DIR")
        recipe = target_recipe(report["proxy_recipe"], report["base"], target_overrides,
                               [f"{report['lr_key']}={opt['lr']!r}"])
        build_plan(recipe)
        warnings = caveats(report) + depth_caveats(report, recipe)
        shift = "n/a" if report["shift_octaves"] is None else f"{report['shift_octaves']:.2f} octaves"
        header = [f"# Emitted by mupctl from the sweep of {report['name']} over {report['axis']} {report['sizes']}:",
                  f"# {report['lr_key']} = {opt['lr']:.6g}, the optimum at the reference {report['axis']} "
                  f"{report['reference_size']} ({opt['fit']} fit); optimum shift across sizes: {shift}.",
                  *(f"# warning: {w}" for w in warnings)]
        if report.get("regret"):
            header.insert(2, "#" + regret_text(report).removeprefix(";") + " (sweep.md has every size)")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, StopIteration) as exc:
        raise UserError(f"{sweep} holds a sweep report this mupctl cannot read ({type(exc).__name__}: {exc}); "
                        "rerun `mupctl sweep` with the same --out to rewrite it", "SWEEP_DIR") from None
    write_target(out, header, recipe)
    return {"path": str(out), "lr_key": report["lr_key"], "lr": opt["lr"], "reference_size": report["reference_size"],
            "axis": report["axis"], "base": report["base"], "shift_octaves": report["shift_octaves"],
            "at_edge": opt["at_edge"], "warnings": warnings, "regret": report.get("regret")}
