"""Coordinate checks on real text (CPU, small): activation RMS is flat across width under mup and across
depth under depth_mup, and visibly not flat without them.

Setup shared by all checks: 2 layers (width checks) or width 64 (depth checks), batch 4 × 32 byte
tokens of the embedded corpus, 5 optimizer steps at the recipe's default AdamW LR 3e-3 (SGD: 0.1),
slopes fitted from step 2 on. `readout_zero_init` is on: with a non-zero readout the logits at
step 2 are still dominated by their init term, which shrinks as m^-1/2 by design, and at widths
64-128 a finite-width effect adds up to -0.3 (it fades above width 256; docs/model.md has the numbers).
"""

import math

import pytest

from mupctl.diagnostics.coord_check import coord_check, fit_slope, summarize
from mupctl.plan import build_plan
from mupctl.recipe import load_recipe

WIDTHS, DEPTHS = [64, 128, 256, 512], [2, 4, 8, 16]
STEPS, BATCH, SEQ = 5, 4, 32
THRESHOLD = 0.15


def recipe_plan(recipe, d_model=64, n_layers=2, optimizer=None):
    raw = {"model": {"d_model": d_model, "n_layers": n_layers, "n_heads": 4, "seq_len": 64},
           "scaling": {"recipe": recipe, "base": {"d_model": 64, "n_layers": 2, "d_head": 16},
                       "readout_zero_init": True},
           "optimizer": optimizer or {"name": "adamw", "lr": 3e-3}}
    return build_plan(load_recipe(raw=raw))


def over_width(recipe, optimizer=None, batch=BATCH, seq=SEQ):
    return coord_check(lambda d: recipe_plan(recipe, d_model=d, optimizer=optimizer), WIDTHS, STEPS, batch, seq)


def over_depth(recipe):
    return coord_check(lambda n: recipe_plan(recipe, n_layers=n), DEPTHS, STEPS, BATCH, SEQ)


def verdict(result, roles=None):
    s = summarize(result, THRESHOLD, roles=roles)
    return s["pass"], s["max_abs_slope"]


def test_fit_slope_and_summary():
    xs = [6, 7, 8, 9]
    assert fit_slope(xs, [2 * x + 1 for x in xs]) == pytest.approx(2.0)
    result = {"slopes": {"a": [0.9, 0.9, 0.1, -0.1], "b": [0.0, 0.0, 0.0, math.nan]}}
    s = summarize(result, 0.15)
    assert s["max_abs_slope"] == {"a": pytest.approx(0.1), "b": math.inf} and not s["pass"]
    assert summarize(result, 0.15, roles=["a"])["pass"]
    with pytest.raises(ValueError, match="two distinct sizes"):
        coord_check(lambda d: recipe_plan("mup", d), [64], 1, 1, 8)


def test_mup_adamw_is_flat_across_width_and_sp_is_not():
    mup = over_width("mup")
    assert len(mup["rms"]["residual"]) == len(WIDTHS) and len(mup["rms"]["residual"][0]) == STEPS + 1
    ok, worst = verdict(mup)
    assert ok, worst
    sp = over_width("none")
    _, sp_worst = verdict(sp)
    assert sp_worst["logits_centered"] > 0.3 and sp_worst["residual"] > 0.3, sp_worst


def test_depth_mup_keeps_the_residual_flat_across_depth_and_mup_does_not():
    ok, worst = verdict(over_depth("depth_mup"), roles=["residual", "logits_centered", "embedding"])
    assert ok, worst  # branch outputs carry the 1/λ multiplier, so they shrink with depth by design
    _, mup_worst = verdict(over_depth("mup"), roles=["residual"])
    assert mup_worst["residual"] > 0.5, mup_worst


def test_mup_muon_is_flat_across_width():
    ok, worst = verdict(over_width("mup", {"name": "muon", "lr": 3e-3}))
    assert ok, worst


def test_mup_sgd_is_flat_across_width():
    ok, worst = verdict(over_width("mup", {"name": "sgd", "lr": 0.1}, batch=8, seq=64))
    assert ok, worst
