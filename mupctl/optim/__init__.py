"""Optimizers from the plan's per-tensor values: one param group per (optimizer, lr, eps, weight_decay).

Each group keeps the plan LR as `peak_lr` (a schedule sets ``group["lr"] = group["peak_lr"] · factor``)
and the `roles` of its tensors. Plan optimizer names map to torch classes:

    adamw → AdamW(betas)   adam → Adam(betas)   sgd → SGD(momentum, nesterov)
    muon  → Muon(momentum, nesterov, ns_steps, adjust_lr_fn) for 2-D hidden matrices, plus AdamW for
            the rest, wrapped in one `MuonAdamW`
"""

from __future__ import annotations

from collections import ChainMap, Counter

import torch

from mupctl.plan import Plan

CLASSES = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD, "muon": torch.optim.Muon}
ADAPTIVE = ("adamw", "adam")  # the optimizers whose groups carry an eps from the plan


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
    """The optimizer of a plan (fused AdamW/Adam by default when the parameters are on CUDA)."""
    s = plan.optimizer_settings
    if fused is None:
        fused = next(model.parameters()).is_cuda
    opts = []
    for name, groups in plan_param_groups(model, plan).items():
        if name in ADAPTIVE:
            opts.append(CLASSES[name](groups, betas=s.betas, fused=fused or None))
        elif name == "sgd":
            opts.append(torch.optim.SGD(groups, momentum=s.momentum, nesterov=s.nesterov))
        else:
            mu = s.muon
            opts.append(torch.optim.Muon(groups, momentum=mu.momentum, nesterov=mu.nesterov, ns_steps=mu.ns_steps,
                                         adjust_lr_fn=mu.adjust_lr_fn))
    return opts[0] if len(opts) == 1 else MuonAdamW(*opts)


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
