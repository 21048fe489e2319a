"""`coord-check`, `sweep` and `emit_recipe` end to end on CPU, with real processes.

Tiny on purpose (widths 32-128, 10 steps, batch 8 × 32-64 tokens): these check the machinery
(files, verdicts, resumability, divergence, the fit, the emitted recipe), not transfer itself,
which needs the sizes in docs/diagnostics.md. At widths 32-128 the finite-width wobble of a mup
coordinate check is up to ~0.25 in slope, so the verdict uses 0.3; SP at LR 1e-2 is at ~1.
"""

import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, invoke, run_cli
from mupctl.diagnostics.coord_cli import format_summary, parse_list, run_coord_check
from mupctl.diagnostics.cells import cell_losses, data_passes
from mupctl.diagnostics.sweep import run_sweep, write_report
from mupctl.diagnostics.plots import sweep_figure
from mupctl.diagnostics.sweep_report import write_markdown
from mupctl.diagnostics.sweep_stats import (add_transfer_cost, fit_optimum, loss_at, regret, seed_statistics,
                                            summarize_cells, wider_is_better)
from mupctl.data.corpus import load_tokens
from mupctl.diagnostics.tune import caveats, emit_recipe
from mupctl.errors import UserError
from mupctl.plan import build_plan
from mupctl.recipe import load_recipe

# σ is pinned at 0.02: at width 32 the default 1/√32 ≈ 0.18 takes the logits' finite-width slope to 0.31
RECIPE = """\
name: tiny-mup
model: {d_model: 32, n_layers: 2, n_heads: 2, seq_len: 64, init_std: 0.02}
scaling: {recipe: mup, base: {d_model: 32}, readout_zero_init: true}
optimizer: {name: adamw, lr: 3.0e-3}
train: {steps: 10, global_batch: 8, micro_batch: 8, eval_interval: 0, eval_batches: 1, log_interval: 1,
        telemetry_interval: 0}
launch: {device: cpu}
"""
LRS = [3e-3, 1e-2, 1e4]  # 1e4 diverges
BASELINE_LRS = [1e-3, 3e-3]  # the SP twin's own grid


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny-mup.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def sweep(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, run_sweep(recipe, [], [32, 64], None, LRS, steps=10, seeds=1, out_dir=out, parallel=3,
                          baseline="none", baseline_lrs=BASELINE_LRS)


def test_parse_list_and_bad_input_name_the_flag(recipe, tmp_path):
    assert parse_list("128, 256,512", int, "--widths") == [128, 256, 512]
    assert parse_list("1e-3,3e-3", float, "--lrs") == [1e-3, 3e-3]
    for text, kind, field in (("128,x", int, "--widths"), ("", float, "--lrs"), ("1e-3,nan", float, "--lrs"),
                              ("3_2,64", int, "--widths"), ("1_0e-3", float, "--lrs"), ("３２,64", int, "--widths")):
        with pytest.raises(UserError, match=f"^{field}: expected a comma-separated list"):
            parse_list(text, kind, field)
    bad = [(dict(widths=[32, 64], depths=[2, 4]), "--widths: give exactly one"),
           (dict(widths=None, depths=None), "--widths: give exactly one"),
           (dict(widths=[64, 64], depths=None), "--widths: lists a size twice"),
           (dict(widths=None, depths=[2]), "--depths: needs at least 2 positive sizes"),
           (dict(widths=[32, 40], depths=None), "--widths: width 40 must be a multiple of the head size 16")]
    for sizes, message in bad:
        with pytest.raises(UserError, match=message):
            run_coord_check(recipe, [], steps=3, batch=4, seq_len=16, out_dir=tmp_path / "cc", **sizes)
    (tmp_path / "afile").write_text("x")
    for kw, message in ((dict(threshold=float("nan")), "--threshold"), (dict(seed=-1), "--seed"),
                        (dict(out_dir=tmp_path / "afile" / "cc"), "--out: .*afile is a file")):
        with pytest.raises(UserError, match=message):
            run_coord_check(recipe, [], [32, 64], None, steps=3, batch=4, seq_len=16,
                            **{"out_dir": tmp_path / "cc"} | kw)
    with pytest.raises(UserError, match="--lr-key: train.seed is not a real-valued recipe field"):
        run_sweep(recipe, [], [32, 64], None, [1.0, 2.0], steps=2, seeds=1, out_dir=tmp_path / "sw", lr_key="train.seed")
    with pytest.raises(UserError, match="--lr-key: is empty"):
        run_sweep(recipe, [], [32, 64], None, [1e-3, 2e-3], steps=2, seeds=1, out_dir=tmp_path / "sw", lr_key=" ")
    with pytest.raises(UserError, match=r"--lrs: needs at least two distinct LRs in \(0, 1e\+06\]"):
        run_sweep(recipe, [], [32, 64], None, [1e-3, -1.0], steps=2, seeds=1, out_dir=tmp_path / "sw")
    assert not (tmp_path / "cc").exists() and not (tmp_path / "sw").exists()


def test_fit_optimum_on_synthetic_curves():
    lrs = [2.0 ** x for x in (-10, -9, -8, -7, -6)]
    parabola = [(x + 7.7) ** 2 + 3.0 for x in range(-10, -5)]  # vertex at log2 η = -7.7
    opt = fit_optimum(lrs, parabola)
    assert opt["fit"] == "parabola" and not opt["at_edge"]
    assert opt["log2_lr"] == pytest.approx(-7.7) and opt["loss"] == pytest.approx(3.0)
    assert opt["lr"] == pytest.approx(2 ** -7.7)
    falling = [5.0, 4.0, 3.5, 3.2, 3.1]
    assert fit_optimum(lrs, falling) | {"loss": None} == {"lr": lrs[-1], "log2_lr": -6.0, "loss": None,
                                                          "at_edge": True, "fit": "grid"}
    next_to_divergence = fit_optimum(lrs, [5.0, 4.0, 3.0, math.inf, math.inf])
    assert next_to_divergence["fit"] == "grid" and next_to_divergence["lr"] == lrs[2]
    assert fit_optimum(lrs, [math.inf] * 5)["lr"] is None
    curves = [[4.0, 3.0, 3.5], [3.9, 2.9, 3.6]]  # the larger size loses at the highest LR
    check = wider_is_better([32, 64], [1e-3, 2e-3, 4e-3], curves, [math.log2(2e-3)] * 2)
    assert [r["ok"] for r in check["by_lr"]] == [True, True, False] and check["ok"] is False


def test_transfer_cost_is_the_loss_lost_at_the_smallest_sizes_best_lr():
    inf = math.inf
    curves = [{"val_loss": [2.0, 1.5, 1.7]}, {"val_loss": [1.6, 1.45, 1.3]}, {"val_loss": [1.2, inf, 1.1]}]
    add_transfer_cost(curves)
    assert [c["transfer_cost"] for c in curves] == [0, pytest.approx(0.15), inf]
    curves = [{"val_loss": [inf, inf]}, {"val_loss": [1.0, 2.0]}]
    add_transfer_cost(curves)
    assert [c["transfer_cost"] for c in curves] == [None, None]


def test_loss_at_reads_the_curve_between_grid_points():
    lrs = [2.0 ** x for x in (-10, -9, -8, -7)]
    curve = [(x + 8.3) ** 2 for x in (-10, -9, -8, -7)]  # a parabola in log2 η: exact between grid points
    assert loss_at(lrs, curve, 2.0 ** -9) == curve[1]
    assert loss_at(lrs, curve, 2.0 ** -8.3) == pytest.approx(0.0, abs=1e-12)
    assert loss_at(lrs, curve, 2.0 ** -9.5) == pytest.approx(1.2 ** 2)
    assert loss_at(lrs, curve, 2.0 ** -11) is None and loss_at(lrs, curve, 2.0 ** -6) is None
    inf = math.inf
    assert loss_at(lrs, [1.0, 2.0, inf, inf], 2.0 ** -9.25) == pytest.approx(1.75)  # a line: no finite triple
    assert loss_at(lrs, [1.0, 2.0, inf, inf], 2.0 ** -7.5) == inf  # next to divergence


def test_regret_is_the_loss_at_the_small_optimum_minus_the_baselines_best():
    lrs = [2.0 ** x for x in (-10, -9, -8, -7, -6)]
    parab = lambda x0, y0: [(x - x0) ** 2 / 10 + y0 for x in (-10, -9, -8, -7, -6)]
    mine = {32: parab(-8.0, 3.0), 64: parab(-7.5, 2.8)}  # the optimum drifts half an octave
    theirs = {32: parab(-8.0, 3.0), 64: parab(-9.0, 2.79)}  # the baseline's moves down and ends lower
    def cells(curves, seeds):
        return [{"size": s, "lr": lr, "seed": k, "final_val_loss": curves[s][j] + noise}
                for s in curves for j, lr in enumerate(lrs) for k, noise in enumerate(seeds)]
    report = {"sizes": [32, 64], "lrs": lrs, "cells": cells(mine, [0.0, 0.02]),
              "curves": [{"size": s, "val_loss": [v + 0.01 for v in mine[s]]} for s in (32, 64)]}
    twin = {"scaling_recipe": "none", "lrs": lrs, "cells": cells(theirs, [0.0, 0.0]),
            "curves": [{"size": s, "val_loss": theirs[s]} for s in (32, 64)]}
    out = regret(report, twin)
    assert out["reference_size"] == 32 and out["reference_lr"] == pytest.approx(2.0 ** -8)
    base, wide = out["by_size"]
    assert base["regret"] == pytest.approx(0.01) and base["regret_own"] == pytest.approx(0.0, abs=1e-12)
    # launched at 2^-8, width 64 sits 0.5 octave off its own optimum: (0.5²)/10 above 2.8 (+0.01 seed mean)
    assert wide["at_reference"] == pytest.approx(2.8 + 0.025 + 0.01)
    assert wide["regret_own"] == pytest.approx(0.025) and wide["regret"] == pytest.approx(0.045)
    assert wide["seed_regret"] == pytest.approx([0.035, 0.055]) and wide["regret_sd"] == pytest.approx(0.02 / 2 ** 0.5)
    assert wide["baseline_lr"] == pytest.approx(2.0 ** -9) and not wide["baseline_at_edge"]
    missing = regret(report, twin | {"curves": twin["curves"][:1], "cells": [c for c in twin["cells"] if c["size"] == 32]})
    assert missing["by_size"][1]["regret"] is None and missing["by_size"][1]["regret_own"] == pytest.approx(0.025)


def test_seed_statistics_measure_how_far_seeds_alone_move_the_shift():
    lrs, sizes = [1e-3, 2e-3, 4e-3, 8e-3], [32, 64]
    curve = {32: [1.3, 1.1, 1.2, 1.5], 64: [1.2, 1.25, 1.0, 1.4]}  # grid optima one octave apart
    def cells(noise):
        return [{"id": f"{s}-{lr}-{k}", "size": s, "lr": lr, "seed": k, "final_train_loss": 1.0,
                 "final_val_loss": curve[s][i] + noise[k]} for s in sizes for i, lr in enumerate(lrs) for k in range(3)]
    same = summarize_cells(cells([0.0, 0.0, 0.0]), sizes, lrs)  # seeds agree: no spread, interval = the shift
    assert same["seed_sd"] == pytest.approx(0, abs=1e-12)
    assert same["shift_interval"]["low"] == pytest.approx(same["shift_octaves"])
    assert same["shift_interval"]["high"] == pytest.approx(same["shift_octaves"])
    rng = np.random.default_rng(1)  # independent noise per cell, as large as the curves' differences
    noisy = [c | {"final_val_loss": c["final_val_loss"] + rng.normal(0, 0.15)} for c in cells([0.0, 0.0, 0.0])]
    stats = seed_statistics(noisy, sizes, lrs)
    assert 0.08 < stats["seed_sd"] < 0.25
    assert stats["shift_interval"]["high"] - stats["shift_interval"]["low"] > 0.5
    assert stats["shift_interval"]["level"] == 0.9 and stats["shift_interval"]["resamples"] == 1000
    assert seed_statistics(noisy, sizes, lrs) == stats  # deterministic, so reports are reproducible
    report = summarize_cells(noisy, sizes, lrs) | {"scaling_recipe": "mup", "sizes": sizes, "axis": "width",
                                                   "steps": 10_000, "base": {"d_model": 32},
                                                   "proxy_recipe": {"train": {"global_batch": 64},
                                                                    "model": {"seq_len": 256, "init_std": None}}}
    def seeds_caveat(shift, high):
        r = report | {"shift_octaves": shift, "shift_interval": report["shift_interval"] | {"high": high}}
        return [w for w in caveats(r) if "seeds alone" in w]
    assert seeds_caveat(0.6, 1.4) == ["the seeds alone move the optimum shift up to 1.40 octaves (90% seed-bootstrap "
                                      "interval): rerun with more --seeds to establish transfer"]
    assert seeds_caveat(0.6, 0.8) == [] and seeds_caveat(1.2, 1.4) == []  # resolved; or the shift caveat says it
    one_seed = [c for c in noisy if c["seed"] == 0]
    assert seed_statistics(one_seed, sizes, lrs) == {"seed_sd": None, "shift_interval": None}
    one_size = seed_statistics([c for c in noisy if c["size"] == 32], [32], lrs)
    assert one_size["shift_interval"] is None and one_size["seed_sd"] > 0


def test_signed_drift_tells_seeds_that_agree_from_seeds_that_flip():
    lrs, sizes = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], [32, 64]
    up = {32: [1.3, 1.1, 1.2, 1.4, 1.6], 64: [1.3, 1.2, 1.05, 1.3, 1.6]}  # optimum one octave higher at 64
    down = {32: up[64], 64: up[32]}
    def cells(curves_by_seed):
        return [{"id": f"{s}-{lr}-{k}", "size": s, "lr": lr, "seed": k, "final_train_loss": 1.0,
                 "final_val_loss": curves[s][i]} for k, curves in enumerate(curves_by_seed)
                for s in sizes for i, lr in enumerate(lrs)]
    agree, flip = summarize_cells(cells([up, up]), sizes, lrs), summarize_cells(cells([up, down]), sizes, lrs)
    assert [d["drift_octaves"] for d in agree["seed_drifts"]] == [pytest.approx(1.0, abs=0.3)] * 2
    assert agree["drift_octaves"] == pytest.approx(agree["shift_octaves"]) and agree["drift_octaves"] > 0.7
    drifts = [d["drift_octaves"] for d in flip["seed_drifts"]]
    assert drifts[0] > 0.7 and drifts[1] < -0.7 and [d["seed"] for d in flip["seed_drifts"]] == [0, 1]
    assert flip["shift_octaves"] >= 0  # unsigned: it cannot show the flip
    assert summarize_cells(cells([up]), sizes, lrs)["seed_drifts"] == []
    assert summarize_cells([c for c in cells([up]) if c["size"] == 32], [32], lrs)["drift_octaves"] is None


def test_val_rose_lists_the_cells_that_rose_past_the_tolerance_and_tune_warns():
    cells = [{"id": i, "size": s, "lr": lr, "seed": 0, "final_val_loss": 1.0, "final_train_loss": 0.9, "val_rise": rise}
             for i, (s, lr, rise) in enumerate([(32, 1e-3, None), (32, 1e-2, 0.005), (64, 1e-3, 0.3), (64, 1e-2, 0.02)])]
    report = summarize_cells(cells, [32, 64], [1e-3, 1e-2])
    assert report["val_rose"] == {"tolerance": 0.01, "cells": [2, 3], "max": 0.3}
    report |= {"cells": cells, "scaling_recipe": "mup", "sizes": [32, 64], "axis": "width", "steps": 10,
               "base": {"d_model": 32}, "proxy_recipe": {"train": {"global_batch": 8},
                                                         "model": {"seq_len": 64, "init_std": None}}}
    assert any(w.startswith("val loss rose at the end of 2 of 4 cells (up to 0.300 nats") and "first: 2)" in w
               for w in caveats(report))
    assert data_passes(None, 10, None) is None  # synthetic data never repeats


def test_val_rise_flags_a_cell_whose_val_loss_climbs_back(tmp_path):
    rows = [{"step": 0, "val_loss": 5.5}, {"step": 300, "val_loss": 1.52}, {"step": 300, "loss": 1.3},
            {"step": 600, "val_loss": 1.71}, {"step": 1000, "loss": 0.23}, {"step": 1000, "val_loss": 2.39}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = cell_losses(tmp_path, 1000)
    assert got["final_val_loss"] == 2.39 and got["val_rise"] == pytest.approx(2.39 - 1.52)
    assert cell_losses(tmp_path, 600)["val_rise"] == pytest.approx(1.71 - 1.52)
    assert cell_losses(tmp_path, 300)["val_rise"] is None  # the step-0 eval is not a trained model


def test_coord_check_mup_is_flat_and_sp_is_not(recipe, tmp_path):
    common = dict(widths=[32, 64, 128], depths=None, steps=4, batch=8, seq_len=32, threshold=0.3)
    mup = run_coord_check(recipe, [], out_dir=tmp_path / "mup", **common)
    assert mup["pass"], mup["max_abs_slope"]
    assert mup["warnings"] == ["width 32 below 64: finite-width effects move the RMS slopes by up to ~0.25 there, "
                               "so the verdict is loose; check at widths >= 64"]
    assert format_summary(mup).splitlines()[-1] == f"  caveat: {mup['warnings'][0]}"
    report = json.loads((tmp_path / "mup" / "coord_check.json").read_text())
    assert report["summary"]["axis"] == "width" and report["scaling_recipe"] == "mup"
    assert set(report["rms"]) == {"embedding", "attn_out", "mlp_out", "residual", "logits", "logits_centered",
                                  "residual_delta", "logits_centered_delta"}
    assert len(report["slopes"]["logits"]) == 5 and report["base"]["d_model"] == 32
    assert (tmp_path / "mup" / "coord_check.png").stat().st_size > 10_000
    sp = run_coord_check(recipe, ["scaling.recipe=none", "optimizer.lr=1e-2"], out_dir=tmp_path / "sp", **common)
    assert not sp["pass"] and sp["max_abs_slope"]["logits"] > 0.5, sp["max_abs_slope"]


def test_sweep_reports_every_cell_and_records_divergence(sweep):
    out, report = sweep
    assert report["counts"] == {"launched": 6, "resumed": 0, "skipped": 0, "done": 4, "diverged": 2, "failed": 0}
    for cell in report["cells"]:
        if cell["lr"] == 1e4:
            assert cell["status"] == "diverged" and cell["final_val_loss"] is None
        else:
            assert cell["status"] == "done" and 2.0 < cell["final_val_loss"] < 5.6
    for curve in report["curves"]:
        assert curve["val_loss"][2] is None and curve["optimum"]["lr"] in LRS[:2]
    assert report["shift_octaves"] is not None and report["reference_size"] == 64
    j = min(range(2), key=report["curves"][0]["val_loss"].__getitem__)  # LRS[2] diverged everywhere
    for curve in report["curves"]:
        assert curve["transfer_cost"] == pytest.approx(curve["val_loss"][j] - min(curve["val_loss"][:2]))
    assert report["curves"][0]["transfer_cost"] == 0
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["curves"] == report["curves"] and saved["lr_key"] == "optimizer.lr"
    assert "| 32 |" in (out / "sweep.md").read_text() and (out / "sweep.png").stat().st_size > 10_000
    assert all(c["val_rise"] is None for c in report["cells"])  # one eval per cell: nothing to compare
    corpus = len(load_tokens())
    train_tokens = corpus - int(corpus * 0.05)  # the embedded split, val_fraction 0.05
    assert report["data_passes"] == pytest.approx(10 * 8 * 64 / train_tokens)
    assert f"- passes over the training split per cell: {report['data_passes']:.2f}" in (out / "sweep.md").read_text()
    assert report["val_rose"]["cells"] == [] and "memorizes" not in (out / "sweep.md").read_text()


def test_sweep_with_a_baseline_sweeps_the_sp_twin_and_reports_the_regret(recipe, sweep):
    out, report = sweep
    twin = json.loads((out / "baseline-none" / "sweep.json").read_text())
    assert twin["scaling_recipe"] == "none" and twin["lrs"] == BASELINE_LRS and twin["counts"]["done"] == 4
    assert all(c["dir"].startswith(str(out / "baseline-none" / "cells")) for c in twin["cells"])
    reg = report["regret"]
    assert report["baseline"] == {"scaling_recipe": "none", "dir": str(out / "baseline-none"), "lrs": BASELINE_LRS}
    assert reg["baseline"] == "none" and reg["reference_size"] == 32
    eta0 = fit_optimum(LRS, [math.inf if v is None else v for v in report["curves"][0]["val_loss"]])["lr"]
    assert reg["reference_lr"] == pytest.approx(eta0)
    for row, mine, theirs in zip(reg["by_size"], report["curves"], twin["curves"]):
        at = loss_at(LRS, [math.inf if v is None else v for v in mine["val_loss"]], eta0)
        assert row["at_reference"] == pytest.approx(at)
        assert row["regret"] == pytest.approx(at - fit_optimum(BASELINE_LRS, theirs["val_loss"])["loss"])
        assert row["regret_own"] == pytest.approx(at - mine["optimum"]["loss"])
        assert row["seed_regret"] == [pytest.approx(row["regret"])] and row["regret_sd"] is None  # one seed
    text = (out / "sweep.md").read_text()
    assert "## Regret against `none` tuned at every width" in text and f"`{out / 'baseline-none'}/sweep.md`" in text
    assert (out / "baseline-none" / "sweep.png").stat().st_size > 10_000


def test_bad_baselines_are_refused_before_any_cell_runs(recipe, tmp_path):
    cases = ((["scaling.recipe=none"], dict(baseline="none"), "--baseline: compares the sweep"),
             ([], dict(baseline="mup"), "--baseline: compares the sweep's scaling recipe with a simpler one"),
             ([], dict(baseline="sp"), "--baseline: must be one of none, mup"),
             ([], dict(baseline_lrs=[1e-3, 2e-3]), "--baseline-lrs: is the grid of the baseline twin"),
             ([], dict(baseline="none", baseline_lrs=[1e-3]), "--baseline-lrs: needs at least two"))
    for overrides, kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            run_sweep(recipe, overrides, [32, 64], None, LRS, steps=2, seeds=1, out_dir=tmp_path / "sw", **kwargs)
    assert not (tmp_path / "sw").exists()


def test_sweep_cli_rerun_skips_every_cell_and_prints_shift_and_cost(recipe, sweep):
    out, report = sweep
    res = run_cli("sweep", recipe, "--widths", "32,64", "--lrs", ",".join(map(str, LRS)), "--steps", "10",
                  "--out", out, "--baseline", "none", "--baseline-lrs", ",".join(map(str, BASELINE_LRS)))
    assert res.returncode == 0, res.stderr
    cost, wide = report["curves"][-1]["transfer_cost"], report["regret"]["by_size"][-1]
    assert "0 to run, 10 finished or diverged before" in res.stderr
    assert res.stdout.startswith(f"sweep: optimum shift {report['shift_octaves']:.2f} octaves; "
                                 f"transfer cost at width 64: {cost:.4f} nats; regret vs none at width 64: "
                                 f"{wide['regret']:+.4f} (own best {wide['regret_own']:+.4f}) at η₀ = ")
    # the verdict's caveats (tune's), on stdout, in the JSON, in sweep.md and under the plot
    assert report["warnings"] == caveats(report) and any(w.startswith("small proxy (width 64 < 256") for w in
                                                          report["warnings"])
    edges = [c["size"] for c in report["curves"] if c["optimum"]["at_edge"]]
    assert any("edge of the LR grid" in w for w in report["warnings"]) == bool(edges)
    assert res.stdout.splitlines()[1:] == [f"  caveat: {w}" for w in report["warnings"]]
    assert json.loads((out / "sweep.json").read_text())["warnings"] == report["warnings"]
    assert all(f"- **warning:** {w}" in (out / "sweep.md").read_text() for w in report["warnings"])
    fig = sweep_figure(report)
    assert list(fig.axes[0].get_xticks()) == sorted(set(LRS + BASELINE_LRS))  # ticks at the swept LRs
    footer = " ".join(fig.texts[0].get_text().split())  # the caveats, wrapped, under the plot
    assert all(" ".join(f"caveat: {w}".split()) in footer for w in report["warnings"])


def test_sweep_checks_the_target_values_before_any_cell_runs(recipe, tmp_path):
    for bad, needle in (("model.d_model=-5", "model.d_model: must be > 0"), ("optimzer.lr=1", "optimzer"),
                        ("model.d_model=40", "--target: width 40 must be a multiple"),
                        ("optimizer.lr=1", "--target: sets optimizer.lr, the value this command tunes")):
        res = invoke("sweep", recipe, "--widths", "32,64", "--lrs", "1e-3,3e-3", "--steps", "2", "--out",
                      tmp_path / "sw", "--emit-recipe", tmp_path / "big.yaml", "--target", bad)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "sw").exists() and not (tmp_path / "big.yaml").exists()


def test_sweep_warns_before_launch_when_cells_repeat_their_data(recipe, tmp_path):
    text = tmp_path / "small.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)  # 900 bytes: 720 train + 180 val
    assert run_cli("data", "prepare", text, "--out", tmp_path / "bin", "--val-fraction", "0.2").returncode == 0
    res = run_cli("sweep", recipe, "--widths", "32,64", "--lrs", "1e-3,3e-3", "--steps", "3", "--parallel", "2",
                  "--out", tmp_path / "sweep", "--json", "--set", "data.source=bin", "--set", f"data.path={tmp_path / 'bin'}")
    assert res.returncode == 0, res.stderr
    passes = 3 * 8 * 64 / 720
    assert json.loads(res.stdout)["data_passes"] == pytest.approx(passes)
    assert f"each cell reads {passes:.1f}× its 720-token training split" in res.stderr


def test_one_size_is_a_plain_lr_sweep_without_shift(recipe, sweep, tmp_path):
    out, report = sweep
    one = tmp_path / "one"
    shutil.copytree(out, one)
    res = run_cli("sweep", recipe, "--widths", "64", "--lrs", ",".join(map(str, LRS)), "--steps", "10", "--out", one)
    assert res.returncode == 0, res.stderr
    assert "3 cells (1 sizes × 3 LRs × 1 seeds): 0 to run, 3 finished or diverged before" in res.stderr
    assert res.stdout.startswith("sweep: optimum shift n/a (one size); transfer cost at width 64: n/a; ")
    single = json.loads((one / "sweep.json").read_text())
    assert single["shift_octaves"] is None and single["wider_is_better"] == {"ok": None, "by_lr": []}
    assert single["curves"][0]["transfer_cost"] is None
    assert any("transfer to other sizes was not measured" in w for w in caveats(single))
    assert single["curves"][0]["optimum"] == report["curves"][1]["optimum"]  # width 64, the same cells
    assert "- one size: an LR sweep, no shift or size check" in (one / "sweep.md").read_text()


def test_sweep_markdown_names_the_axis_of_the_size_check(sweep, tmp_path):
    out, report = sweep
    assert "- wider is better at every LR" in (out / "sweep.md").read_text()
    write_markdown(report | {"axis": "depth"}, tmp_path / "depth.md")
    text = (tmp_path / "depth.md").read_text()
    assert "- deeper is better at every LR" in text and "wider" not in text and "memorizes" not in text
    assert report["depth_alpha"] is None and f"({report['scaling_recipe']}, adamw)" in text
    write_markdown(report | {"scaling_recipe": "depth_mup", "depth_alpha": 0.5}, tmp_path / "alpha.md")
    assert "(depth_mup, α = 0.5, adamw) over width" in (tmp_path / "alpha.md").read_text()
    first = report["cells"][0]["id"]
    write_markdown(report | {"val_rose": {"tolerance": 0.01, "cells": [first], "max": 0.8}}, tmp_path / "rose.md")
    assert f"- **warning:** val loss rose at the end of 1 of 6 cells (up to 0.800 nats above the cell's own best " \
           f"eval, first: {first})" in (tmp_path / "rose.md").read_text()


def test_sweep_skips_finished_cells_and_resumes_unfinished_ones(recipe, sweep):
    out, _ = sweep
    cells = out / "cells"
    mtimes = {d.name: (d / "metrics.jsonl").stat().st_mtime_ns for d in cells.iterdir()}
    unfinished = cells / "w64-lr0.01-s0"  # as if killed before its first row: plan.json but no metrics
    (unfinished / "metrics.jsonl").unlink()
    (unfinished / "state.json").unlink()  # nor a recorded end (a kill -9 of everything)
    assert not (unfinished / "checkpoints").exists()  # sweep cells run with checkpoint.interval 0
    again = run_sweep(recipe, [], [32, 64], None, LRS, steps=10, seeds=1, out_dir=out, parallel=3,
                      baseline="none", baseline_lrs=BASELINE_LRS)
    assert again["counts"] == {"launched": 0, "resumed": 1, "skipped": 5, "done": 4, "diverged": 2, "failed": 0}
    assert {d.name: (d / "metrics.jsonl").stat().st_mtime_ns for d in cells.iterdir()
            if d != unfinished} == {k: v for k, v in mtimes.items() if k != unfinished.name}
    with pytest.raises(UserError, match=r"--out: .* holds a run with train\..* but this sweep asks for 12"):
        run_sweep(recipe, [], [32, 64], None, LRS, steps=12, seeds=1, out_dir=out)


def test_emit_recipe_plans_with_the_sweep_base_and_the_measured_lr(sweep, tmp_path):
    out, report = sweep
    target = tmp_path / "big.yaml"
    info = emit_recipe(out, ["model.d_model=256", "train.steps=3000", "name=big"], target)
    opt = next(c["optimum"] for c in report["curves"] if c["size"] == 64)
    assert info["lr"] == opt["lr"] and info["reference_size"] == 64 and info["warnings"]
    plan = build_plan(load_recipe(target))
    assert plan["base"] == {"d_model": 32, "n_layers": 2, "d_head": 16} and plan["width_mult"] == 8
    assert plan["model"]["n_heads"] == 16 and plan["schedule"]["steps"] == 3000
    assert load_recipe(target).optimizer.lr == pytest.approx(opt["lr"])
    assert info["regret"] == report["regret"]  # the sweep ran a baseline twin: tune reports its regret
    assert any(w.startswith("model.init_std 0.02 is 0.11x the base's fan-in scale 1/sqrt(32)") for w in info["warnings"])
    twin = json.loads((out / "baseline-none" / "sweep.json").read_text())  # SP carries no base σ: no such caveat
    assert twin["proxy_recipe"]["model"]["init_std"] == 0.02 and not any("init_std" in w for w in twin["warnings"])
    regret_line = next(line for line in target.read_text().splitlines() if line.startswith("# regret vs none"))
    assert regret_line.startswith(f"# regret vs none at width 64: {report['regret']['by_size'][-1]['regret']:+.4f}")
    with pytest.raises(UserError, match="^--out: .* exists"):
        emit_recipe(out, [], target)
    with pytest.raises(UserError, match="^--target: sets optimizer.lr, the value this command tunes"):
        emit_recipe(out, ["optimizer.lr=1"], target, force=True)  # the file would contradict the measured LR
    assert emit_recipe(out, [], target, force=True)["path"] == str(target)


def test_emit_recipe_warns_when_the_target_is_deeper_than_the_rules_measured(sweep, tmp_path):
    """The width sweep ran 2 layers under mup: a deeper target is not covered by mup at all; under
    depth_mup + AdamW beyond 2x the reference depth, an annealed schedule moved the optimum."""
    out, _ = sweep
    def depth_warnings(*targets):
        info = emit_recipe(out, list(targets), tmp_path / "t.yaml", force=True)
        return [w for w in info["warnings"] if "layers" in w]
    assert depth_warnings() == []
    mup = depth_warnings("model.n_layers=8")
    assert len(mup) == 1 and "the target has 8 layers and the reference 2: scaling.recipe mup has no depth rule" in mup[0]
    deep = depth_warnings("scaling.recipe=depth_mup", "model.n_layers=8")
    assert len(deep) == 1 and "4x deeper than the reference (2 layers) and the schedule anneals (cosine)" in deep[0]
    assert "try the grid LRs just above" in deep[0]
    assert f"# warning: {deep[0]}" in (tmp_path / "t.yaml").read_text().splitlines()
    assert depth_warnings("scaling.recipe=depth_mup", "model.n_layers=8", "schedule.name=constant") == []
    assert depth_warnings("scaling.recipe=depth_mup", "model.n_layers=4") == []  # within 2x of the reference


def test_ctrl_c_stops_a_sweeps_running_cells_with_a_checkpoint(recipe, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the sweep's process group) reaches the sweep alone, which passes
    one SIGTERM to each running cell: each stops at its next stop check and saves a checkpoint
    (two signals, as when the cell also got the Ctrl-C, would kill its workers before they save)."""
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "mupctl", "sweep", str(recipe), "--widths", "32", "--lrs", "1e-3,3e-3",
                             "--steps", "100000", "--parallel", "2", "--out", str(out), "--set", "train.log_interval=100000",
                             "--set", "checkpoint.interval=100000"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and sum("mupctl worker:" in log.read_text()
                                             for log in out.glob("cells/*/train.log")) < 2:
            time.sleep(0.05)
        time.sleep(3)  # past the cell's step-time probe (steps 5-10)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "Traceback" not in err, err
    cells = sorted(out.glob("cells/*"))
    assert len(cells) == 2
    *notes, last = err.strip().splitlines()  # progress notes, then the failure in one line
    assert all(line.startswith("mupctl sweep: ") for line in notes) and last.startswith("failed: stopped by SIGINT")
    for cell in cells:
        stop, end = [json.loads(line) for line in (cell / "events.jsonl").read_text().splitlines()[-2:]]
        assert stop["event"] == "stop" and stop["checkpoint"], (cell.name, stop)
        assert end["event"] == "end" and end["state"] == "stopped", (cell.name, end)
        assert (cell / "checkpoints" / f"step_{stop['step']:08d}" / "COMMITTED").is_file()


def test_coord_check_trains_on_the_recipes_data(recipe, tmp_path):
    """The batches come from the recipe's `data`: bin shards tokenized with 300 ids (ids ≥ 256 that
    the embedded bytes never produce), so a check on them differs from one on the embedded corpus."""
    ids = np.random.default_rng(0).integers(256, 300, 5000).astype(np.uint16)
    shards = tmp_path / "bin"
    shards.mkdir()
    ids[:4000].tofile(shards / "train.bin")
    ids[4000:].tofile(shards / "val.bin")
    (shards / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 300}))
    common = dict(widths=[32, 64], depths=None, steps=2, batch=2, seq_len=16)
    run_coord_check(recipe, ["model.vocab_size=300"], out_dir=tmp_path / "emb", **common)
    run_coord_check(recipe, ["model.vocab_size=300", "data.source=bin", f"data.path={shards}"],
                    out_dir=tmp_path / "bin-cc", **common)
    emb, binned = (json.loads((tmp_path / d / "coord_check.json").read_text()) for d in ("emb", "bin-cc"))
    assert emb["data"].startswith("embedded:") and binned["data"].startswith("bin: 4,000 train")
    assert binned["loss"][0][0] == emb["loss"][0][0]  # zero readout: ln(300) on any data
    assert binned["loss"][0][-1] != emb["loss"][0][-1]  # after two updates on different tokens
    with pytest.raises(UserError, match="data.path"):
        run_coord_check(recipe, ["data.source=bin", f"data.path={tmp_path / 'missing'}"], out_dir=tmp_path / "x",
                        **common)


def test_tune_base_tunes_each_key_at_the_base_shape_in_turn_and_emits_the_target(recipe, tmp_path):
    from mupctl.diagnostics.tune_base import tune_base
    work, target = tmp_path / "work", tmp_path / "big.yaml"
    sets = ["model.d_model=64", "model.n_heads=4", "model.init_std=null"]  # σ starts from its default, 1/√32
    summary = tune_base(recipe, sets, ["optimizer.lr", "model.init_std"],
                        steps=4, seeds=1, rounds=1, points=3, work_dir=work, out_path=target,
                        targets=["model.d_model=128"], parallel=3)
    lr_row, sigma_row = summary["sweeps"]
    assert summary["base"] == {"d_model": 32, "n_layers": 2, "d_head": 16}
    assert any(v == pytest.approx(2 ** -2.5) for v in sigma_row["values"])  # the grid is centred on 1/√32
    assert sigma_row["values"][1] / sigma_row["values"][0] == pytest.approx(2.0)  # one octave per point
    assert summary["tuned"] == {"optimizer.lr": lr_row["optimum"]["lr"], "model.init_std": sigma_row["optimum"]["lr"]}
    cell = next((work / "r1-model.init_std" / "cells").iterdir())
    trained = load_recipe(cell / "recipe.yaml")  # the σ sweep ran at the base width with the tuned LR
    assert trained.model.d_model == 32 and trained.optimizer.lr == pytest.approx(summary["tuned"]["optimizer.lr"])
    plan = build_plan(load_recipe(target))
    assert plan["width_mult"] == 4 and plan["base"] == summary["base"]
    emb = next(t for t in plan["tensors"] if t["name"] == "tok_emb.weight")
    assert emb["init_std"] == pytest.approx(summary["tuned"]["model.init_std"])  # σ is a base value: m⁰
    assert json.loads((work / "tune_base.json").read_text())["tuned"] == summary["tuned"]
    assert "| 1 | `model.init_std` |" in (work / "tune_base.md").read_text()
    again = tune_base(recipe, sets, ["optimizer.lr", "model.init_std"], steps=4,
                      seeds=1, rounds=1, points=3, work_dir=work, out_path=target, targets=[], force=True)
    assert again["tuned"] == summary["tuned"]  # every cell was already there
    assert load_recipe(target).model.d_model == 64  # no --target: the recipe's own shape, tuned
    for sets, keys, points, targets, message in (
            ([], ["train.seed"], 3, [], "--keys: train.seed must be a positive real-valued"),
            ([], ["optimizer.lr", "optimizer.lr"], 3, [], "--keys: give each key once"),
            ([], ["optimizer.lr"], 4, [], "--points: must be odd"),
            ([], ["optimizer.lr"], 3, ["optimizer.lr=1"], "--target: sets optimizer.lr"),
            (["scaling.alpha_out=1e6"], ["scaling.alpha_out"], 3, [], "scaling.alpha_out: its grid reaches 2e")):
        with pytest.raises(UserError, match=message):
            tune_base(recipe, sets, keys, steps=4, seeds=1, rounds=1, points=points, work_dir=tmp_path / "w2",
                      out_path=tmp_path / "t2.yaml", targets=targets)
    assert not (tmp_path / "t2.yaml").exists() and not (tmp_path / "w2").exists()


def test_sweep_report_and_plot_with_nothing_finished_at_the_base(sweep, tmp_path):
    """A sweep cut short (the base cells failed, the rest partly done) still gets its sweep.md and PNG."""
    _, report = sweep
    cut = copy.deepcopy(report)
    cut["curves"][0]["val_loss"] = [None] * len(cut["lrs"])
    cut["curves"][0]["optimum"] = fit_optimum(cut["lrs"], [math.inf] * len(cut["lrs"]))
    assert caveats(cut)[0].startswith(f"no cell finished without diverging at width {cut['sizes'][0]}: there is no "
                                      "optimum there; lower --lrs")
    for row in cut["regret"]["by_size"]:
        row |= {"at_reference": None, "regret": None, "regret_own": None, "seed_regret": [None], "seed_regret_own": [None]}
    cut["regret"]["reference_lr"] = None
    write_report(cut, tmp_path)
    assert "η₀ = n/a (no cell at the smallest size finished without diverging)" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert list(sweep_figure(cut).axes[1].get_xticks()) == report["sizes"]
