"""Validation during training: the mean loss over fixed batches of the validation split."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterable

import torch

from mupctl.ranks import global_mean


class Evaluator:
    """`evaluate()`: mean loss over `batches` global batches of the val split (its steps 0..batches-1,
    the same every time), each as the training step's `accum` micro batches per rank:

        val_loss = Σ_{b, k, ranks} loss(x_bk, y_bk) / (batches · accum · world)

    Due every `interval` steps and after the last step (`due`); interval 0: never."""

    def __init__(self, model: torch.nn.Module, wrapped: torch.nn.Module,
                 micro_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                 batches: int, accum: int, interval: int,
                 context: Callable[[], ContextManager] = contextlib.nullcontext):
        self.model, self.wrapped, self.micro_batches = model, wrapped, micro_batches
        self.batches, self.accum, self.interval = batches, accum, interval
        self.context = context

    def due(self, step: int, last: bool = False) -> bool:
        return self.interval > 0 and (step % self.interval == 0 or last)

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        total = None
        for b in range(self.batches):
            for x, y in self.micro_batches(b):
                with self.context():
                    loss = self.wrapped(x, y).float()
                total = loss if total is None else total + loss
        self.model.train()
        return global_mean(total) / (self.batches * self.accum)
