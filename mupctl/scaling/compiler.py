"""Compile a recipe into the resolved policy: per-tensor init/LR/eps/wd and forward multipliers.

Pure Python (no torch). The only place where μP math is applied: everything downstream (model,
optimizer, diagnostics) reads the numbers this produces.
"""

from __future__ import annotations

import math

from mupctl.architecture import ROLES, derive_shape, tensor_specs
from mupctl.errors import UserError
from mupctl.scaling.optimizers import OPTIMIZERS, family, part
from mupctl.scaling.rules import QUANTITIES, exponents, forward_exponents, scale

ROLE_FACTOR = {"init_std": "init_mult", "lr": "lr_mult", "eps": "eps_mult", "weight_decay": "wd_mult"}
"""quantity → the `scaling.*_mult` table of per-role constants that multiplies its base value."""


def check_combination(recipe) -> None:
    """Reject recipe × optimizer combinations no published rule covers (exit 2 at plan time)."""
    rec, opt = recipe.scaling.recipe, recipe.optimizer.name
    if rec == "depth_mup" and opt == "sgd":
        raise UserError("depth_mup has no rule for SGD: no published law covers hidden weight and bias "
                        "LRs over depth; use optimizer.name: adamw (or adam) with depth_mup, or "
                        "scaling.recipe: mup with sgd", "optimizer.name")
    if rec != "none" and opt == "adam" and (recipe.optimizer.weight_decay or 0) > 0:
        raise UserError("Adam's coupled L2 decay has no muP rule; use optimizer.name: adamw for "
                        f"decoupled weight decay, or set 0, got {recipe.optimizer.weight_decay}",
                        "optimizer.weight_decay")
    if recipe.scaling.depth_alpha is not None and rec != "depth_mup":
        raise UserError(f"only depth_mup scales depth; set scaling.recipe: depth_mup or drop "
                        f"scaling.depth_alpha (got recipe {rec})", "scaling.depth_alpha")
    if recipe.scaling.readout_zero_init and recipe.model.tie_embeddings:
        raise UserError("needs an untied output head; set model.tie_embeddings: false or drop it",
                        "scaling.readout_zero_init")
    for table in ROLE_FACTOR.values():
        if recipe.model.tie_embeddings and getattr(recipe.scaling, table).output != 1:
            raise UserError("the head is tied to the embedding, so it follows the embedding's factor; set "
                            f"scaling.{table}.embedding, or model.tie_embeddings: false", f"scaling.{table}.output")
    if opt != "muon" and recipe.optimizer.muon.distributed == "layerwise":
        raise UserError(f"layerwise distributes Muon's Newton-Schulz work and needs optimizer.name: muon (got "
                        f"{opt}); drop it or set optimizer.name: muon", "optimizer.muon.distributed")
    if recipe.scaling.init_mult.vector != 1:
        raise UserError("norm gains start at 1 and biases at 0, so there is no init std to scale; drop it",
                        "scaling.init_mult.vector")


def resolved_base(recipe) -> dict:
    """The base shape: `scaling.base.*`, unset fields taken from the model; the base width may
    instead come from `scaling.width_mult` (base width = d_model / m, a whole number)."""
    s = derive_shape(recipe.model)
    b, m = recipe.scaling.base, recipe.scaling.width_mult
    if m is not None and b.d_model is not None:
        raise UserError("give the base width once: scaling.base.d_model or scaling.width_mult, not both",
                        "scaling.width_mult")
    base_d = b.d_model or s.d_model
    if m is not None:
        base_d = s.d_model / m
        if abs(base_d - round(base_d)) > 1e-9:
            raise UserError(f"model.d_model / scaling.width_mult must be a whole base width, got "
                            f"{s.d_model}/{m}; write scaling.base.d_model instead", "scaling.width_mult")
        base_d = int(round(base_d))
    base_head = b.d_head or s.d_head
    if base_d % base_head:
        raise UserError(f"must divide the base width ({base_d}), got {base_head}", "scaling.base.d_head")
    if base_d == s.d_model and b.d_head is not None and b.d_head != s.d_head:
        raise UserError(f"the base width is the model's own ({s.d_model}) so the base head size must be "
                        f"its d_head ({s.d_head}), got {b.d_head}; set scaling.base.d_model too",
                        "scaling.base.d_head")
    return {"d_model": base_d, "n_layers": b.n_layers or s.n_layers, "d_head": base_head}


def base_weight_decay(opt) -> float:
    """Default decay: the registry's `default_weight_decay` (0.1 for decoupled optimizers: adamw,
    muon's AdamW part; 0 for adam/sgd)."""
    if opt.weight_decay is not None:
        return opt.weight_decay
    return OPTIMIZERS[opt.name].default_weight_decay


def base_value(recipe, fam: str, role: str, quantity: str, base: dict) -> float | None:
    """The value tuned at the base shape, before any width/depth multiplier: the rule's base
    (`rule_base`) times the role's constant factor `scaling.<lr|init|wd|eps>_mult.<role>`."""
    value = rule_base(recipe, fam, role, quantity, base)
    factor = getattr(getattr(recipe.scaling, ROLE_FACTOR[quantity]), role)
    return None if value is None else value * factor


def base_init_std(recipe, base: dict) -> float:
    """σ: `model.init_std`, or by default 1/√(base d_model), the LeCun/fan-in init of a hidden matrix at
    the base shape (Tensor Programs V Table 3: hidden init variance ∝ 1/fan_in). A fixed σ such as
    GPT-2's 0.02 is ~1/√2500: at a 256-wide base it is 3× too small, and μP carries that to every
    width while SP's fixed σ drifts towards 1/√fan_in as it widens (docs/results round 14). Under
    `none` there is no base to carry: the default is 1/√d_model of the model itself (fan-in init at
    every width, so an SP twin does not depend on `scaling.base`, and equals `mup` at the base)."""
    if recipe.model.init_std is not None:
        return recipe.model.init_std
    return 1 / math.sqrt(recipe.model.d_model if recipe.scaling.recipe == "none" else base["d_model"])


def rule_base(recipe, fam: str, role: str, quantity: str, base: dict) -> float | None:
    """The base value of one role and quantity as the recipe gives it (σ, η, ε, wd). The tensor's
    registered optimizer (`part`) says where its LR and decay come from: its own recipe section
    (`optimizer.muon.*` for Muon's matrices) or `optimizer.*`, and whether it has an ε."""
    opt = recipe.optimizer
    entry = OPTIMIZERS[part(opt.name, fam)]
    section = getattr(opt, entry.section) if entry.section else None
    if quantity == "init_std":
        if role == "vector":
            return 0.0
        if role == "output" and recipe.scaling.readout_zero_init:
            return 0.0
        sigma = base_init_std(recipe, base)
        return sigma / math.sqrt(2 * base["n_layers"]) if role == "hidden_out" else sigma
    if quantity == "lr":
        return (section or opt).lr
    if quantity == "eps":
        return opt.eps if entry.eps else None
    if section is not None:
        return section.weight_decay
    if role == "vector" and not opt.decay_vectors:
        return 0.0
    return base_weight_decay(opt)


def depth_alpha(recipe) -> float | None:
    """CompleteP's α under depth_mup (`scaling.depth_alpha`, default 1); None for none/mup."""
    if recipe.scaling.recipe != "depth_mup":
        return None
    return 1.0 if recipe.scaling.depth_alpha is None else recipe.scaling.depth_alpha


def policy(recipe, role: str, in_branch: bool, ndim: int, m: float, lam: float, base: dict) -> dict:
    """Values and exponents of every quantity for one (role, in_branch, ndim)."""
    fam = family(recipe.optimizer.name, role, ndim, recipe.optimizer.muon.adjust_lr_fn)
    out: dict = {"optimizer": part(recipe.optimizer.name, fam), "exponents": {}}
    alpha = depth_alpha(recipe) or 1.0
    for q in QUANTITIES:
        a, b = exponents(recipe.scaling.recipe, fam, role, in_branch, q, alpha)
        out[q] = scale(base_value(recipe, fam, role, q, base), a, b, m, lam)
        out["exponents"][q] = {"m": a, "lambda": b}
    return out


def multipliers(recipe, m: float, lam: float, m_head: float, base_head: int) -> tuple[dict, dict]:
    sc = recipe.scaling
    alpha_attn = sc.alpha_attn if sc.alpha_attn is not None else math.sqrt(base_head)
    bases = {"embedding": sc.alpha_in, "output_logits": sc.alpha_out,
             "attention_scale": alpha_attn / base_head, "residual_branch": 1.0}
    values, exps = {}, {}
    for name, (a, b, c) in forward_exponents(sc.recipe, depth_alpha(recipe) or 1.0).items():
        values[name] = bases[name] * m**a * lam**b * m_head**c
        exps[name] = {"m": a, "lambda": b, "m_head": c}
    return values, exps


def policy_warnings(recipe, base: dict, m: float, lam: float) -> list[str]:
    """Legal but probably unintended settings, for stderr (not errors)."""
    sc, out = recipe.scaling, []
    if sc.recipe == "none":
        return out
    if m != 1 and sc.base.d_head is None:
        base_d = base["d_model"]
        d_head = recipe.model.d_model // recipe.model.n_heads
        out.append(f"scaling.base.d_head is not set: assuming the base kept this model's head size {d_head} "
                   f"({base_d // d_head} heads at the base width); if the base had "
                   f"{recipe.model.n_heads} heads, set scaling.base.d_head: {base_d // recipe.model.n_heads}")
    if m == 1 and lam == 1:
        out.append(f"the base shape equals the model's, so {sc.recipe} equals the standard parameterization "
                   "here; set scaling.base.* to the shape the hyperparameters were tuned at")
    return out


def compile_policy(recipe) -> dict:
    """The policy part of the plan: multipliers, role table and per-tensor values."""
    check_combination(recipe)
    shape = derive_shape(recipe.model)
    base = resolved_base(recipe)
    m = shape.d_model / base["d_model"]
    lam = shape.n_layers / base["n_layers"]
    m_head = shape.d_head / base["d_head"]
    specs = tensor_specs(recipe.model, recipe.scaling.zero_init_query)

    tensors = []
    for spec in specs:
        pol = policy(recipe, spec.role, spec.in_branch, len(spec.shape), m, lam, base)
        tensors.append({
            "name": spec.name, "shape": list(spec.shape), "role": spec.role, "in_branch": spec.in_branch,
            "init": spec.init, "init_std": pol["init_std"], "zero_rows": spec.zero_rows,
            "lr": pol["lr"], "eps": pol["eps"], "weight_decay": pol["weight_decay"],
            "optimizer": pol["optimizer"],
        })

    roles = {}
    for role in ROLES:
        in_branch = role in ("hidden", "hidden_out", "vector")
        entry = policy(recipe, role, in_branch, 1 if role == "vector" else 2, m, lam, base)
        entry["tensors"] = sum(1 for t in specs if t.role == role)
        outside = policy(recipe, role, False, 1, m, lam, base) if role == "vector" else None
        if outside and any(outside[q] != entry[q] for q in QUANTITIES):
            entry["outside_branch"] = {q: outside[q] for q in QUANTITIES} | {"exponents": outside["exponents"]}
        roles[role] = entry

    mult, mult_exp = multipliers(recipe, m, lam, m_head, base["d_head"])
    return {
        "recipe": recipe.scaling.recipe,
        "optimizer": recipe.optimizer.name,
        "width_mult": m,
        "depth_mult": lam,
        "depth_alpha": depth_alpha(recipe),
        "head_dim_mult": m_head,
        "base": base,
        "roles": roles,
        "multipliers": mult,
        "multiplier_exponents": mult_exp,
        "tensors": tensors,
        "warnings": policy_warnings(recipe, base, m, lam),
    }
