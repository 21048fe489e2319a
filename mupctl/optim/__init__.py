"""Optimizers from the plan's per-tensor values: one param group per (optimizer, lr, eps, weight_decay).

Each group keeps the plan LR as `peak_lr` (a schedule sets ``group["lr"] = group["peak_lr"] · factor``)
and the `roles` of its tensors. A plan tensor's `optimizer` names a registry entry
(`mupctl.scaling.optimizers`), which says which torch class updates it and with what arguments:

    adamw → torch.optim.AdamW(betas)   adam → torch.optim.Adam(betas)   sgd → torch.optim.SGD(momentum, nesterov)
    muon  → `mupctl.optim.muon.Muon` (torch.optim.Muon's update, batched and optionally layer-wise
            distributed Newton–Schulz) for 2-D hidden matrices; with AdamW for the rest, wrapped in
            one `MuonAdamW`
"""

from __future__ import annotations

import importlib
from collections import ChainMap, Counter

import torch

from mupctl.plan import Plan
from mupctl.scaling.optimizers import OPTIMIZERS


def _resolve(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


CLASSES = {name: _resolve(e.torch) for name, e in OPTIMIZERS.items()}
"""Registered optimizer name → the torch class that realizes it."""
ADAPTIVE = tuple(name for name, e in OPTIMIZERS.items() if e.eps)  # groups carry an eps from the plan


def plan_param_groups(model: torch.nn.Module, plan: Plan) -> dict[str, list[dict]]:
    """Plan optimizer name → its param groups; every model parameter must be in the plan exactly once."""
    params = dict(model.named_parameters())
    names = Counter(t.name for t in plan.tensors)
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in names]
    twice = [n for n, count in names.items() if count > 1]
    if missing or extra or twice:
        raise ValueError(f"the model's parameters do not match the plan: missing from the model {missing}, "
                         f"not in the plan {extra}, in the plan twice {twice}")
    groups: dict[tuple, dict] = {}
    for t in plan.tensors:
        key = (t.optimizer, t.lr, t.eps, t.weight_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": t.lr, "peak_lr": t.lr, "weight_decay": t.weight_decay, "roles": []}
            if t.optimizer in ADAPTIVE:
                if t.eps is None:
                    raise ValueError(f"{t.name}: {t.optimizer} needs an eps, the plan has none")
                groups[key]["eps"] = t.eps
        g = groups[key]
        g["params"].append(params[t.name])
        if t.role not in g["roles"]:
            g["roles"].append(t.role)
    by_optimizer: dict[str, list[dict]] = {}
    for (name, *_), g in groups.items():
        by_optimizer.setdefault(name, []).append(g)
    return by_optimizer


def build_optimizer(model: torch.nn.Module, plan: Plan, fused: bool | None = None) -> torch.optim.Optimizer:
    """The optimizer of a plan, each part built as its registry entry says (fused AdamW/Adam by
    default when the parameters are on CUDA)."""
    if fused is None:
        fused = next(model.parameters()).is_cuda
    names = {p: n for n, p in model.named_parameters()}
    opts = []
    for name, groups in plan_param_groups(model, plan).items():
        entry = OPTIMIZERS[name]
        kwargs = entry.kwargs(plan.optimizer_settings)
        if entry.fused:
            kwargs["fused"] = fused or None
        if entry.named:
            kwargs["names"] = names
        opts.append(CLASSES[name](groups, **kwargs))
    return opts[0] if len(opts) == 1 else MuonAdamW(*opts)


def muon_layout(opt: torch.optim.Optimizer) -> dict | None:
    """How the Muon part (if any) spreads its Newton–Schulz work over ranks (`Muon.layout`), or None."""
    return next((o.layout() for o in optimizer_parts(opt) if hasattr(o, "layout")), None)


def optimizer_parts(opt: torch.optim.Optimizer) -> list[torch.optim.Optimizer]:
    """The real optimizers behind `opt` (for DCP's get_state_dict(model, optimizers))."""
    return list(getattr(opt, "optimizers", [opt]))


class MuonAdamW(torch.optim.Optimizer):
    """Several optimizers acting as one (Muon for matrices + AdamW for the rest).

    `param_groups` and `state` read the real optimizers' live objects (their `load_state_dict`
    replaces both), so an LR schedule writing ``group["lr"]`` reaches them at any time.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer):
        super().__init__([p for o in optimizers for g in o.param_groups for p in g["params"]], {})
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.__dict__.get("optimizers", ()) for g in o.param_groups]

    @param_groups.setter
    def param_groups(self, _) -> None:  # Optimizer.__init__ assigns one; the real groups live in `optimizers`
        pass

    @property
    def state(self) -> ChainMap:
        return ChainMap(*(o.state for o in self.__dict__.get("optimizers", ())))

    @state.setter
    def state(self, _) -> None:
        pass

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {type(o).__name__: o.state_dict() for o in self.optimizers}

    def load_state_dict(self, state_dict: dict) -> None:
        for o in self.optimizers:
            o.load_state_dict(state_dict[type(o).__name__])
