"""μP health telemetry: per-role update-to-weight RMS ratios and the model's activation RMS.

Under μP with Adam, rms(ΔW)/rms(W) of hidden matrices should stay roughly flat across width
(ΔW ~ η/m per entry against W ~ σ/√m·… ), and a role whose ratio drifts by ~m between a small
and a large run is a parameterization going wrong. Computed only at telemetry steps: one copy of
the (local shard of the) weights before the update, then sums of squares per role.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


class UpdateRatio:
    def __init__(self, named_params: dict[str, torch.nn.Parameter], roles: dict[str, str], sharded: bool):
        self.params = named_params
        self.roles = roles
        self.sharded = sharded
        self.order = sorted(set(roles.values()))
        self.before: dict[str, torch.Tensor] = {}

    def snapshot(self) -> None:
        self.before = {n: _local(p.detach()).float().clone() for n, p in self.params.items()}

    def ratios(self) -> dict[str, float]:
        """sqrt(Σ‖ΔW‖² / Σ‖W‖²) per role over the role's tensors (all shards under FSDP)."""
        dev = next(iter(self.params.values())).device
        sums = torch.zeros(2 * len(self.order), dtype=torch.float64, device=dev)
        for name, p in self.params.items():
            new = _local(p.detach()).float()
            i = self.order.index(self.roles[name])
            sums[2 * i] += (new - self.before[name]).pow(2).sum().double()
            sums[2 * i + 1] += self.before[name].pow(2).sum().double()
        self.before = {}
        if self.sharded and dist.is_initialized():
            dist.all_reduce(sums)
        sums = sums.cpu()
        return {role: (sums[2 * i] / sums[2 * i + 1]).sqrt().item() if sums[2 * i + 1] > 0 else float("nan")
                for i, role in enumerate(self.order)}


class Telemetry:
    """One μP health row every `interval` steps (0: never): `arm(step)` before the step says whether
    it is one and, if so, has the model record activation RMS (`model.record`) and snapshots the
    weights; `row(step)` after it reads both (a host sync)."""

    def __init__(self, model, interval: int, sharded: bool):
        self.model, self.interval = model, interval
        self.update_ratio = UpdateRatio(dict(model.named_parameters()), model.param_roles(), sharded)

    def arm(self, step: int) -> bool:
        if not (self.interval and step % self.interval == 0):
            return False
        self.model.record = {}
        self.update_ratio.snapshot()
        return True

    def row(self, step: int) -> dict:
        acts = {k: v.item() for k, v in self.model.record.items()}
        self.model.record = None
        return {"step": step, "act_rms": acts, "update_ratio": self.update_ratio.ratios()}
