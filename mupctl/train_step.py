"""One optimizer step: the same code in the worker, `coord-check` and `benchmarks/throughput.py`.

    lr_g = peak_lr_g · lr_factor(step)           every param group, when a schedule is given
    loss = Σ_k model(x_k, y_k) / K               K micro batches, gradients accumulated; data-parallel
                                                 gradients are synchronized on the last one only
    n    = ‖∇‖ (global norm);  ∇ ← ∇ · min(1, clip / n)      clip 0: no clipping, n still measured
    optimizer.step(); optimizer.zero_grad()

A step returns (loss, n) as device tensors and never waits for the device, so the caller decides
when to read them (a host sync).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Iterable

import torch


class TrainStep:
    """`step(s, batches)` runs optimizer step `s` (0-based) on `batches`, an iterable of exactly
    `accum` (x, y) micro batches. `wrapped` is what the forward calls (DDP or FSDP2 around `model`,
    or `model` itself); `forward(x, y)` gives the loss (default: wrapped(x, y)); `context()` makes the
    context entered around every forward and backward (autocast)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 wrapped: torch.nn.Module | None = None, accum: int = 1, grad_clip: float = 0.0,
                 lr_factor: Callable[[int], float] | None = None,
                 context: Callable[[], ContextManager] = contextlib.nullcontext, forward: Callable | None = None):
        self.model, self.optimizer = model, optimizer
        self.wrapped = model if wrapped is None else wrapped
        self.accum, self.grad_clip, self.lr_factor = accum, grad_clip, lr_factor
        self.context = context
        self.forward = forward or (lambda x, y: self.wrapped(x, y))

    def __call__(self, step: int, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]):
        if self.lr_factor is not None:
            factor = self.lr_factor(step)
            for group in self.optimizer.param_groups:
                group["lr"] = group["peak_lr"] * factor
        loss_sum = None
        for k, (x, y) in enumerate(batches):
            with self.grad_sync(k == self.accum - 1), self.context():
                loss = self.forward(x, y) / self.accum
                loss.backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip or math.inf)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, norm

    def settle_buckets(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """DDP rebuilds its gradient buckets in the order the gradients became ready in its first
        synchronized backward, so a fresh run all-reduces steps ≥ 1 in that layout. A resumed run's first
        step would all-reduce in the initial layout, and over 3+ ranks a ring all-reduce sums an element
        in an order set by its place in its bucket: the resume would not be bit-exact. One forward and
        backward on the first of `batches` (read only under DDP), whose gradients are dropped (nothing is
        stepped), lets DDP record that order first. Nothing to do without DDP."""
        if not isinstance(self.wrapped, torch.nn.parallel.DistributedDataParallel):
            return
        x, y = next(iter(batches))
        with self.context():
            self.forward(x, y).backward()
        self.model.zero_grad(set_to_none=True)

    def grad_sync(self, on: bool) -> ContextManager:
        """DDP: `no_sync()` unless `on`; FSDP2: reduce-scatter only when `on`; else nothing."""
        if isinstance(self.wrapped, torch.nn.parallel.DistributedDataParallel) and not on:
            return self.wrapped.no_sync()
        if hasattr(self.wrapped, "set_requires_gradient_sync"):
            self.wrapped.set_requires_gradient_sync(on)
        return contextlib.nullcontext()
