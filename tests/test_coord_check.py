"""Coordinate checks on real text (CPU, small): activation RMS is flat across width under mup and across
depth under depth_mup, and visibly not flat without them. The Δ-from-init roles (RMS of
h_t(x₀) − h_0(x₀) on the step-0 batch) are 0 at step 0, match an independent computation, and
across depth are flat under depth_mup (L branch updates × 1/L) but grow ≈ ∝ L under mup (slope ≈ +1).

Setup shared by all checks: 2 layers (width checks) or width 64 (depth checks), base σ 0.02 (pinned:
the measured slopes below were taken with it, before the default became 1/√(base d_model)), batch
4 × 32 byte tokens of the embedded corpus, 5 optimizer steps at the recipe's default AdamW LR 3e-3 (SGD: 0.1),
slopes fitted from step 2 on. `readout_zero_init` is on: with a non-zero readout the logits at
step 2 are still dominated by their init term, which shrinks as m^-1/2 by design, and at widths
64-128 a finite-width effect adds up to -0.3 (it fades above width 256; docs/model.md has the numbers).
"""

import functools
import json
import math

import numpy as np
import pytest
import torch

from mupctl.data.corpus import load_text
from mupctl.diagnostics.coord_check import DELTA_ROLES, coord_check, fit_slope, summarize, text_batches
from mupctl.diagnostics.coord_cli import format_summary, run_coord_check
from mupctl.diagnostics.plots import plot_coord_check
from mupctl.model import GPT
from mupctl.optim import build_optimizer
from mupctl.plan import compile_plan
from mupctl.recipe import load_recipe

WIDTHS, DEPTHS = [64, 128, 256, 512], [2, 4, 8, 16]
STEPS, BATCH, SEQ = 5, 4, 32
THRESHOLD = 0.15


def recipe_plan(recipe, d_model=64, n_layers=2, optimizer=None, readout_zero_init=True):
    raw = {"model": {"d_model": d_model, "n_layers": n_layers, "n_heads": 4, "seq_len": 64, "init_std": 0.02},
           "scaling": {"recipe": recipe, "base": {"d_model": 64, "n_layers": 2, "d_head": 16},
                       "readout_zero_init": readout_zero_init},
           "optimizer": optimizer or {"name": "adamw", "lr": 3e-3}}
    return compile_plan(load_recipe(raw=raw))


def over_width(recipe, optimizer=None, batch=BATCH, seq=SEQ):
    return coord_check(lambda d: recipe_plan(recipe, d_model=d, optimizer=optimizer), WIDTHS, STEPS, batch, seq)


@functools.cache  # shared by the RMS and the Δ depth tests; callers must not mutate the result
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
    # Δ roles: the NaN slope at step 0 (Δ = 0) is never judged, even from step 0; the default verdict
    # leaves them out (they have their own), and a NaN after step 0 still counts as ∞
    delta = {"slopes": {"a": [0.0, 0.05], "residual_delta": [math.nan, 0.05, -0.1],
                        "logits_centered_delta": [math.nan, math.nan, 0.0]}}
    assert set(summarize(delta, 0.15, from_step=0)["max_abs_slope"]) == {"a"}
    d = summarize(delta, 0.15, from_step=0, roles=DELTA_ROLES)
    assert d["max_abs_slope"] == {"residual_delta": pytest.approx(0.1), "logits_centered_delta": math.inf}
    assert summarize(delta, 0.15, from_step=2, roles=DELTA_ROLES)["pass"]


def test_mup_adamw_is_flat_across_width_and_sp_is_not():
    mup = over_width("mup")
    assert len(mup["rms"]["residual"]) == len(WIDTHS) and len(mup["rms"]["residual"][0]) == STEPS + 1
    ok, worst = verdict(mup)
    assert ok, worst
    assert set(worst) == {"embedding", "attn_out", "mlp_out", "residual", "logits", "logits_centered"}
    delta_ok, delta_worst = verdict(mup, roles=DELTA_ROLES)  # measured: 0.03 and 0.01
    assert delta_ok, delta_worst
    sp = over_width("none")
    _, sp_worst = verdict(sp)
    assert sp_worst["logits_centered"] > 0.3 and sp_worst["residual"] > 0.3, sp_worst
    _, sp_delta = verdict(sp, roles=DELTA_ROLES)  # measured: 1.7 and 1.1
    assert sp_delta["residual_delta"] > 0.5 and sp_delta["logits_centered_delta"] > 0.5, sp_delta


def test_depth_mup_keeps_the_residual_flat_across_depth_and_mup_does_not():
    ok, worst = verdict(over_depth("depth_mup"), roles=["residual", "logits_centered", "embedding"])
    assert ok, worst  # branch outputs carry the 1/λ multiplier, so they shrink with depth by design
    _, mup_worst = verdict(over_depth("mup"), roles=["residual"])
    assert mup_worst["residual"] > 0.5, mup_worst


@pytest.mark.parametrize("mode", ["original", "match_rms_adamw"])
def test_mup_muon_is_flat_across_width(mode):
    """Both Muon LR rules meet the spectral condition. match_rms_adamw under Adam's η/m (the rule
    before the fix) moved features ∝ m^-½: slopes 0.31–0.61 here, 0.37–0.68 on the GPU."""
    result = over_width("mup", {"name": "muon", "lr": 3e-3, "muon": {"adjust_lr_fn": mode}})
    ok, worst = verdict(result)
    assert ok, worst
    ok, worst = verdict(result, roles=DELTA_ROLES)
    assert ok, worst


def test_mup_sgd_is_flat_across_width():
    ok, worst = verdict(over_width("mup", {"name": "sgd", "lr": 0.1}, batch=8, seq=64))
    assert ok, worst


def test_delta_from_init_is_zero_at_step_0_positive_after_and_matches_a_direct_computation():
    """Rebuild the first size by hand (same seed, batches, optimizer) and compute the residual stream
    without the final-norm hook (embedding, then the blocks), so a Δ taken on the wrong batch, at the
    wrong step, from the wrong module or without centring the logits fails here."""
    depths, steps, batch, seq = [1, 2], 3, 2, 16
    make = functools.partial(recipe_plan, "depth_mup", readout_zero_init=False)
    result = coord_check(lambda n: make(n_layers=n), depths, steps, batch, seq)
    for role in DELTA_ROLES:
        assert len(result["rms"][role]) == len(depths) and math.isnan(result["slopes"][role][0])
        for series in result["rms"][role]:
            assert series[0] == 0.0 and all(v > 0 for v in series[1:]), (role, series)
        assert all(math.isfinite(s) for s in result["slopes"][role][1:])

    torch.manual_seed(0)
    model = GPT(make(n_layers=depths[0]))
    opt = build_optimizer(model, make(n_layers=depths[0]))
    xs, ys = text_batches(np.frombuffer(load_text().encode(), dtype=np.uint8), steps + 1, batch, seq, 0)
    x0, T = xs[0], xs.shape[-1]

    def stream_and_centred_logits():
        with torch.no_grad():
            x = model.tok_emb(x0) * model.emb_mult
            for block in model.blocks:
                x = block(x, (model.rope_cos[:T], model.rope_sin[:T]))
            z = model(x0)
        return x, z - z.mean(-1, keepdim=True)

    h0, z0 = stream_and_centred_logits()
    for t in range(1, steps + 1):
        model(xs[t - 1], ys[t - 1]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        h, z = stream_and_centred_logits()
        assert result["rms"]["residual_delta"][0][t] == pytest.approx((h - h0).pow(2).mean().sqrt().item(),
                                                                      rel=1e-4)
        assert result["rms"]["logits_centered_delta"][0][t] == pytest.approx(
            (z - z0).pow(2).mean().sqrt().item(), rel=1e-4)


def test_depth_mup_keeps_the_change_from_init_flat_across_depth_and_mup_does_not():
    """Under mup the L branch updates add up with multiplier 1: Δ residual ∝ L (slope ≈ +1, about
    +0.7..0.9 at depths 2-16 here); under depth_mup the 1/L multiplier makes it Θ(1)."""
    dm = summarize(over_depth("depth_mup"), THRESHOLD, roles=DELTA_ROLES)
    assert dm["pass"], dm["max_abs_slope"]
    mup = over_depth("mup")
    mup_verdict = summarize(mup, THRESHOLD, roles=["residual_delta"])
    assert mup_verdict["max_abs_slope"]["residual_delta"] > 0.5, mup_verdict
    assert min(mup["slopes"]["residual_delta"][2:]) > 0.5  # grows with depth, not merely not flat
    assert mup_verdict["max_abs_slope"]["residual_delta"] > dm["max_abs_slope"]["residual_delta"] + 0.4


def test_run_coord_check_reports_both_verdicts(tmp_path):
    recipe = tmp_path / "depth.yaml"
    recipe.write_text("name: tiny-depth\n"
                      "model: {d_model: 32, n_layers: 2, n_heads: 2, seq_len: 32}\n"
                      "scaling: {recipe: depth_mup, base: {d_model: 32, n_layers: 2}, readout_zero_init: true}\n"
                      "optimizer: {name: adamw, lr: 3.0e-3}\n")
    summary = run_coord_check(recipe, [], None, [1, 2], steps=2, batch=2, seq_len=16, out_dir=tmp_path / "cc",
                              threshold=0.3)
    report = json.loads((tmp_path / "cc" / "coord_check.json").read_text())
    assert set(report["rms"]) == {"embedding", "attn_out", "mlp_out", "residual", "logits", "logits_centered",
                                  *DELTA_ROLES}
    for role in DELTA_ROLES:
        assert report["slopes"][role][0] is None and all(s is not None for s in report["slopes"][role][1:])
        assert all(series[0] == 0.0 for series in report["rms"][role])
    assert report["summary"] == summary
    assert summary["judged_roles"] == ["residual", "logits_centered"]
    assert set(summary["max_abs_slope"]) == {"residual", "logits_centered"}
    delta = summary["delta_verdict"]
    assert delta["judged_roles"] == DELTA_ROLES and set(delta["max_abs_slope"]) == set(DELTA_ROLES)
    assert delta["threshold"] == 0.3 and delta["from_step"] == 2 and isinstance(delta["pass"], bool)
    assert "delta_verdict" in summary["theory"] and "CompleteP" in summary["theory"]
    lines = format_summary(summary).splitlines()
    assert lines[0].startswith(f"coord-check {'PASS' if summary['pass'] else 'FAIL'} (|slope| <= 0.3): residual ")
    assert "delta_verdict" in lines[1] and "residual_delta" in lines[1] and "delta_verdict" in lines[2]
    assert (tmp_path / "cc" / "coord_check.png").stat().st_size > 10_000
    diverged = report | {"rms": report["rms"] | {"logits": [[None] * 3 for _ in report["sizes"]],
                                                 "residual": [[math.inf] * 3 for _ in report["sizes"]]}}
    plot_coord_check(diverged, tmp_path / "diverged.png")  # a panel with nothing to log-scale still draws
    assert (tmp_path / "diverged.png").stat().st_size > 10_000
