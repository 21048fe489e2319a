"""The one training step (`TrainStep`) and the per-window throughput clock (`metrics.Throughput`)."""

import math
import time

import pytest
import torch

from mupctl.metrics import Throughput
from mupctl.model import GPT
from mupctl.optim import build_optimizer
from mupctl.plan import compile_plan
from mupctl.recipe import load_recipe
from mupctl.train_step import TrainStep


def model_and_optimizer(seed=0):
    plan = compile_plan(load_recipe(raw={"model": {"d_model": 32, "n_heads": 2, "seq_len": 16},
                                         "optimizer": {"name": "sgd", "lr": 0.1}}))
    torch.manual_seed(seed)
    model = GPT(plan)
    return model, build_optimizer(model, plan)


def test_accumulated_micro_batches_make_the_full_batch_step():
    """loss = Σ_k loss_k / K and its gradient: two micro batches of 2 step like one batch of 4
    (SGD, so the update is the gradient itself); the LR follows peak_lr · lr_factor(step)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (4, 16), generator=g), torch.randint(0, 256, (4, 16), generator=g)
    full_model, full_opt = model_and_optimizer()
    full = TrainStep(full_model, full_opt, lr_factor=lambda s: 0.5 ** s)
    loss, norm = full(2, [(x, y)])
    halves_model, halves_opt = model_and_optimizer()
    halves = TrainStep(halves_model, halves_opt, accum=2, lr_factor=lambda s: 0.5 ** s)
    loss2, norm2 = halves(2, [(x[:2], y[:2]), (x[2:], y[2:])])
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6) and norm2.item() == pytest.approx(norm.item(), rel=1e-5)
    assert all(g["lr"] == pytest.approx(0.1 / 4) for g in halves_opt.param_groups)
    for a, b in zip(full_model.parameters(), halves_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in full_model.parameters())  # zero_grad(set_to_none)


def test_clipping_scales_the_gradient_to_the_clip_norm():
    model, opt = model_and_optimizer()
    x = torch.randint(0, 256, (2, 16))
    before = [p.detach().clone() for p in model.parameters()]
    _, norm = TrainStep(model, opt, grad_clip=1e-3)(0, [(x, x)])
    step = math.sqrt(sum((p - b).pow(2).sum().item() for p, b in zip(model.parameters(), before)))
    assert norm.item() > 1e-3 and step == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr · clip


def test_a_throughput_window_counts_its_own_training_time_only():
    syncs = []
    timer = Throughput(tokens_per_step=1000, sync=lambda: syncs.append(1))
    time.sleep(0.05)  # before the window: not counted
    timer.start(10)
    time.sleep(0.1)
    with timer.paused():  # validation or a checkpoint inside the window
        time.sleep(0.2)
    tps = timer.tokens_per_s(12)
    assert 2 * 1000 / 0.13 < tps < 2 * 1000 / 0.1
    assert len(syncs) == 4  # the device is synchronized at each edge of the window and of the pause
