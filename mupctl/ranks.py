"""Small collectives of the training loop (every rank calls them; each is a host sync)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def global_mean(value: torch.Tensor) -> float:
    """The mean of a scalar tensor over all ranks."""
    value = value.detach().float().clone()
    dist.all_reduce(value)
    return value.item() / dist.get_world_size()


def agree(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return t.item() > 0


def from_rank0(value: int, device: torch.device) -> int:
    """Rank 0's integer `value`, on every rank."""
    t = torch.tensor([value], device=device)
    dist.broadcast(t, 0)
    return int(t.item())
