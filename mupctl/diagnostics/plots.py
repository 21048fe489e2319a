"""PNG plots of the diagnostics reports (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from mupctl.diagnostics.reports import recipe_label
from mupctl.errors import UserError

ROLE_ORDER = ["embedding", "attn_out", "mlp_out", "residual", "logits", "logits_centered",
              "residual_delta", "logits_centered_delta"]
"""Panel order: the RMS roles, then the Δ-from-init roles (RMS of h_t(x₀) − h_0(x₀)) on their own row."""


def require_matplotlib() -> None:
    """Fail before anything runs when the plots cannot be drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("the diagnostics draw PNG plots with matplotlib: pip install 'mupctl[plot]'", "--out")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _positive(values) -> list[float]:
    """Log axes cannot show 0, ∞ or NaN: those become gaps."""
    return [v if v is not None and math.isfinite(v) and v > 0 else math.nan for v in values]


def _slope_text(value) -> str:
    return f"{value:+.2f}" if value is not None and math.isfinite(value) else "n/a"


def plot_coord_check(report: dict, path: Path) -> None:
    """One panel per role: RMS vs size (log2 x, log y), one line per step t colored by t, the
    fitted slope at the last step in the title (μP papers' coordinate-check figure). The Δ-from-init
    roles (`residual_delta`, `logits_centered_delta`: RMS of h_t(x₀) − h_0(x₀)) get panels of their
    own; their t = 0 line is 0 and so not drawn (a log axis has no 0). Each title says which verdict
    judges the role: `pass` (no mark), `delta_verdict` ("Δ verdict") or neither ("not judged")."""
    plt = _pyplot()
    summary, steps, sizes = report["summary"], report["steps"], report["sizes"]
    delta = summary.get("delta_verdict") or {"judged_roles": [], "pass": None}
    roles = [r for r in ROLE_ORDER if r in report["rms"]] + sorted(set(report["rms"]) - set(ROLE_ORDER))
    cols = 3
    rows = math.ceil(len(roles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols + 1, 3.4 * rows), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis")
    for ax, role in zip(axes.flat, roles):
        lines = [_positive([series[t] for series in report["rms"][role]]) for t in range(steps + 1)]
        for t, line in enumerate(lines):
            ax.plot(sizes, line, marker="o", ms=3, color=cmap(t / max(steps, 1)), label=f"t={t}")
        ax.set_xscale("log", base=2)
        if any(math.isfinite(v) for line in lines for v in line):
            ax.set_yscale("log")
        else:  # every run diverged (∞, NaN) or the role is 0: a log axis would have nothing to scale to
            ax.text(0.5, 0.5, "no finite positive value", ha="center", va="center", transform=ax.transAxes)
        judged = ("" if role in summary["judged_roles"] else " (Δ verdict)" if role in delta["judged_roles"]
                  else " (not judged)")
        ax.set_title(f"{role}{judged}\nslope at t={steps}: {_slope_text(report['slopes'][role][steps])}",
                     fontsize=9)
        ax.set_xlabel(summary["axis"])
        ax.set_ylabel("RMS of Δ from init (probe batch x₀)" if role.endswith("_delta") else "RMS")
    for ax in list(axes.flat)[len(roles):]:
        ax.axis("off")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, steps)), ax=axes, label="step t",
                 shrink=0.8)
    verdict = "PASS" if summary["pass"] else "FAIL"
    delta_text = "" if delta["pass"] is None else f"; Δ from init: {'PASS' if delta['pass'] else 'FAIL'}"
    fig.suptitle(f"{report['name']} ({recipe_label(report)}, {report['optimizer']}): coordinate check over "
                 f"{summary['axis']} — RMS: {verdict}{delta_text} (max |slope| from step {summary['from_step']} "
                 f"≤ {summary['threshold']:g})", fontsize=10)
    if summary.get("warnings"):
        fig.set_figheight(fig.get_figheight() + 0.3 + 0.15 * len(summary["warnings"]))
        fig.get_layout_engine().set(rect=(0, caveat_footer(fig, summary["warnings"]), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(report: dict, path: Path) -> None:
    """sweep.png: `sweep_figure`, saved."""
    plt = _pyplot()
    fig = sweep_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_figure(report: dict):
    """Mean val loss vs LR (log2 x, ticks at the swept LRs), one curve per size colored by size, a star at
    each size's optimum; diverged LRs are gaps in the curve, marked × on the top edge. The optimum shift
    across sizes is in the title, the report's caveats (`warnings`) under the plot. With a baseline twin
    (`regret`): its best loss per size as a hollow square on the left, and a right panel with the regret
    per size (mean curves, each seed dotted)."""
    plt = _pyplot()
    reg = report.get("regret")
    fig, axes = plt.subplots(1, 2 if reg else 1, figsize=(12 if reg else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    cmap = plt.get_cmap("viridis")
    curves = report["curves"]
    for i, curve in enumerate(curves):
        color = cmap(i / max(len(curves) - 1, 1))
        ax.plot(report["lrs"], [math.nan if v is None else v for v in curve["val_loss"]], marker="o", ms=4,
                color=color, label=f"{report['axis']} {curve['size']}")
        diverged = [lr for lr, v in zip(report["lrs"], curve["val_loss"]) if v is None]
        ax.plot(diverged, [0.97] * len(diverged), "x", color=color, transform=ax.get_xaxis_transform())
        opt = curve["optimum"]
        if opt["lr"] is not None:
            ax.plot([opt["lr"]], [opt["loss"]], marker="*", ms=14, color=color, markeredgecolor="black")
        row = reg["by_size"][i] if reg else None
        if row and row["baseline_lr"] is not None:
            ax.plot([row["baseline_lr"]], [row["baseline_best"]], marker="s", ms=9, mfc="none", color=color,
                    label=f"{reg['baseline']} best at {curve['size']}")
    lrs = report["lrs"] + (report["baseline"]["lrs"] if reg else [])
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(lrs) / 1.5, max(lrs) * 1.5)
    lr_ticks(ax, sorted(set(lrs)))
    ax.set_xlabel(f"{report['lr_key']} (× on top: diverged)")
    ax.set_ylabel(f"val loss after {report['steps']} steps (mean of {report['seeds']} seed(s))")
    shift = report["shift_octaves"]
    ax.set_title(f"{report['name']} ({recipe_label(report)}): LR sweep over {report['axis']} — optimum "
                 f"shift {'n/a' if shift is None else f'{shift:.2f} octaves'}", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if reg:
        _plot_regret(axes[0][1], report)
    fig.tight_layout(rect=(0, caveat_footer(fig, report.get("warnings", [])), 1, 1))
    return fig


def lr_ticks(ax, lrs: list[float]) -> None:
    """x ticks at the swept LRs (or sizes) themselves, labelled as typed (1e-3, 0.003), no minor ticks."""
    from matplotlib.ticker import NullLocator
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs], rotation=45 if len(lrs) > 6 else 0, fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())


def caveat_footer(fig, warnings: list[str]) -> float:
    """The verdict's caveats under the panels, one wrapped line each; the fraction of the figure's height
    they take (0 without caveats), for the layout to keep free."""
    import textwrap
    if not warnings:
        return 0.0
    width = int(fig.get_figwidth() * 15)  # characters per line at fontsize 7
    text = "\n".join(textwrap.fill(f"caveat: {w}", width, subsequent_indent="    ") for w in warnings)
    lines = text.count("\n") + 1
    height = min(0.5, (lines * 0.13 + 0.1) / fig.get_figheight())
    fig.text(0.01, 0.01, text, fontsize=7, va="bottom", ha="left", color="darkred")
    return height


def _plot_regret(ax, report: dict) -> None:
    """Regret vs size: against the baseline's best and against this recipe's own best."""
    reg, sizes = report["regret"], report["sizes"]
    for key, label, color in (("regret", f"vs {reg['baseline']} tuned at each size", "tab:red"),
                              ("regret_own", "vs own best at each size", "tab:blue")):
        ax.plot(sizes, [math.nan if r[key] is None else r[key] for r in reg["by_size"]], marker="o",
                color=color, label=label)
        for k in range(max((len(r[f"seed_{key}"]) for r in reg["by_size"]), default=0)):
            ax.plot(sizes, [math.nan if r[f"seed_{key}"][k] is None else r[f"seed_{key}"][k] for r in reg["by_size"]],
                    ls=":", lw=1, color=color)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(sizes) / 1.2, max(sizes) * 1.2)  # set, not autoscaled: every regret may be missing
    lr_ticks(ax, sizes)
    ax.set_xlabel(report["axis"])
    ax.set_ylabel("val loss at η₀ − best (nats)")
    eta = "n/a" if reg["reference_lr"] is None else f"{reg['reference_lr']:.3g}"
    ax.set_title(f"regret of launching at η₀ = {eta} (tuned at {reg['reference_size']}); "
                 "dotted: seeds", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
