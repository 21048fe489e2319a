"""The human-readable side of a sweep report: sweep.md and the one-line texts the CLI prints."""

from __future__ import annotations

from pathlib import Path

from mupctl.diagnostics.reports import recipe_label


def write_markdown(report: dict, path: Path) -> None:
    """sweep.md: mean val loss per size × LR (best in bold, — = diverged), optima, shift, wider-is-better,
    and the verdict's caveats (`tune.caveats`: grid edge, memorizing cells, a small proxy, …)."""
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
    from mupctl.diagnostics.tune import caveats  # tune reads this module's texts
    lines += [f"- **warning:** {w}" for w in caveats(report)]
    if report.get("regret"):
        lines += [""] + regret_lines(report)
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


def _num(value, signed: bool = False) -> str:
    return "—" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")


def _lr(value) -> str:
    return "n/a (no cell at the smallest size finished without diverging)" if value is None else f"{value:.4g}"


def regret_lines(report: dict) -> list[str]:
    """The regret section of sweep.md: per size, the loss at the LR tuned at the smallest size, the
    best losses of this recipe and of its baseline twin, the two regrets and their per-seed values."""
    reg, axis = report["regret"], report["axis"]
    base = reg["baseline"]
    lines = [f"## Regret against `{base}` tuned at every {axis}", "",
             f"η₀ = {_lr(reg['reference_lr'])}, the optimum of the mean curve at {axis} {reg['reference_size']} "
             f"(tune small); baseline report: `{report['baseline']['dir']}/sweep.md`.", "",
             f"| {axis} | loss at η₀ | own best | {base} best | regret vs {base} | regret vs own best | "
             f"per seed vs {base} |", "|" + " --- |" * 7]
    for row in reg["by_size"]:
        edge = " (grid edge)" if row["baseline_at_edge"] else ""
        seeds = ", ".join(_num(v, True) for v in row["seed_regret"]) or "—"
        sd = "" if row["regret_sd"] is None else f" (sd {row['regret_sd']:.4f})"
        lines.append(f"| {row['size']} | {_num(row['at_reference'])} | {_num(row['own_best'])} | "
                     f"{_num(row['baseline_best'])}{edge} | {_num(row['regret'], True)}{sd} | "
                     f"{_num(row['regret_own'], True)} | {seeds} |")
    return lines + ["", f"Regret > 0: the model launched at η₀ ends worse than `{base}` tuned at that {axis}."]


def regret_text(report: dict) -> str:
    """'; regret vs none at width 2048: +0.0031 (own best +0.0012) at η₀ = 0.002 tuned at width 256'
    for the CLI and the emitted recipe, or '' without a baseline."""
    reg = report.get("regret")
    if not reg:
        return ""
    last = reg["by_size"][-1]
    return (f"; regret vs {reg['baseline']} at {report['axis']} {last['size']}: {_num(last['regret'], True)} "
            f"(own best {_num(last['regret_own'], True)}) at η₀ = {_lr(reg['reference_lr'])} tuned at "
            f"{report['axis']} {reg['reference_size']}")
