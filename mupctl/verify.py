"""Check that a realized model and optimizer equal their plan, tensor by tensor (`mupctl plan --verify`).

Compared per tensor: presence and position, shape, role and in_branch (as tagged by the model's
modules), the optimizer class holding it and its param group's `peak_lr`, eps and weight_decay,
and the init: "ones"/"zeros" exactly; "normal" by the measured RMS of the non-zeroed rows
against init_std within 5/√n relative (n ≥ 1000 draws put the estimate's standard error at
1/√(2n), so a wrong std of a few percent still shows), with the `zero_rows` exactly zero.
The forward multipliers the model uses are compared with the plan's as well.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mupctl.model import GPT
from mupctl.optim import ADAPTIVE, CLASSES, build_optimizer, optimizer_parts
from mupctl.plan import Plan, TensorPolicy

SEED = 0


@dataclass
class Mismatch:
    tensor: str
    field: str
    expected: Any
    actual: Any

    def as_dict(self) -> dict:
        return asdict(self)


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def init_mismatch(spec: TensorPolicy, p: torch.Tensor) -> Mismatch | None:
    """The init check of one tensor (None when it matches)."""
    w = p.detach().float().cpu()
    name, kind, std, k = spec.name, spec.init, spec.init_std, spec.zero_rows
    if kind == "normal" and std > 0:
        if k and w[:k].count_nonzero():
            return Mismatch(name, "zero_rows", k, f"{int(w[:k].ne(0).any(dim=-1).sum())} of {k} rows non-zero")
        rest = w[k:]
        measured = rest.pow(2).mean().sqrt().item()
        if abs(measured - std) > std * 5 / math.sqrt(rest.numel()) + 1e-8:
            return Mismatch(name, "init_std", std, measured)
        return None
    value = 1.0 if kind == "ones" else 0.0
    if not bool((w == value).all()):
        return Mismatch(name, "init", "zeros" if kind == "normal" else kind,
                        f"max |w - {value:g}| = {(w - value).abs().max().item():.3g}")
    return None


def verify(plan: Plan, model: GPT | None = None, optimizer: torch.optim.Optimizer | None = None) -> list[Mismatch]:
    """Mismatches between `plan` and the model/optimizer (realized on CPU with a fixed seed if not given)."""
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = GPT(plan, device="cpu")
    out: list[Mismatch] = []
    params = dict(model.named_parameters())
    plan_names, model_names = [t.name for t in plan.tensors], list(params)
    planned = set(plan_names)
    out += [Mismatch(n, "present", True, False) for n in plan_names if n not in params]
    out += [Mismatch(n, "present", False, True) for n in model_names if n not in planned]
    if [n for n in plan_names if n in params] != [n for n in model_names if n in planned]:
        out.append(Mismatch("(model)", "parameter order", plan_names, model_names))
    if optimizer is None and not out:
        optimizer = build_optimizer(model, plan, fused=False)

    holder = {}  # id(param) → (plan optimizer name, group)
    for opt in optimizer_parts(optimizer) if optimizer is not None else []:
        kind = next((k for k, cls in CLASSES.items() if type(opt) is cls), type(opt).__name__)
        for g in opt.param_groups:
            holder.update({id(p): (kind, g) for p in g["params"]})

    for spec in plan.tensors:
        name = spec.name
        if name not in params:
            continue
        p, tag = params[name], model.tags.get(name)
        actual = {"shape": tuple(p.shape), "role": tag and tag.role, "in_branch": tag and tag.in_branch}
        if optimizer is not None:
            kind, g = holder.get(id(p), (None, {}))
            actual |= {"optimizer": kind, "lr": g.get("peak_lr"), "weight_decay": g.get("weight_decay"),
                       "eps": g.get("eps") if kind in ADAPTIVE else None}
        for field, value in actual.items():
            planned = getattr(spec, field)
            if not (_close(planned, value) if field in ("lr", "eps", "weight_decay") else planned == value):
                out.append(Mismatch(name, field, planned, value))
        if tuple(p.shape) == spec.shape and (bad := init_mismatch(spec, p)):
            out.append(bad)

    used = {"(model)": {"embedding": model.emb_mult, "output_logits": model.out_mult}}
    used |= {f"blocks.{i}": {"attention_scale": b.attn.scale, "residual_branch": b.branch_mult}
             for i, b in enumerate(model.blocks)}
    planned = plan.multipliers.model_dump()
    out += [Mismatch(where, f"multipliers.{k}", planned[k], v)
            for where, values in used.items() for k, v in values.items() if not _close(planned[k], v)]
    return out
