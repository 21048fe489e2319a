"""The plan: everything a run needs, as JSON-able data, with a hash of its parameterization.

plan = scaling policy (from `mupctl.scaling`) + model shape + size/FLOPs/memory summary +
schedule + launch argv. The hash covers what exact resume depends on (shape, policy, optimizer
settings) and not what may change between restarts (steps, logging, launch).
"""

from __future__ import annotations

import hashlib
import json
from math import prod
from dataclasses import asdict

from mupctl.architecture import derive_shape, flops_per_token
from mupctl.launch.command import RUN_DIR_PLACEHOLDER, torchrun_argv
from mupctl.scaling import compile_policy

PLAN_VERSION = 1
HASHED = ("version", "model", "recipe", "optimizer", "optimizer_settings", "width_mult", "depth_mult",
          "head_dim_mult", "base", "multipliers", "tensors")

# Recipe sections whose change would make a resumed run differ from an uninterrupted one.
EXACTNESS_FIELDS = ("model.", "scaling.", "optimizer.", "data.", "schedule.", "train.seed",
                    "train.global_batch", "train.precision")

# Bytes of optimizer state per parameter element (fp32 state).
STATE_BYTES = {"adamw": 8, "adam": 8, "muon": 4}


def _state_bytes(tensor: dict, opt) -> int:
    if tensor["optimizer"] == "sgd":
        return 4 if opt.momentum > 0 else 0
    return STATE_BYTES[tensor["optimizer"]]


def summary(recipe, tensors: list[dict]) -> dict:
    """Parameter counts, training FLOPs per token and a per-GPU memory estimate (fp32 master
    weights + fp32 grads + optimizer state; divided by world size under FSDP; activations excluded)."""
    n = sum(prod(t["shape"]) for t in tensors)
    n_emb = sum(prod(t["shape"]) for t in tensors if t["role"] == "embedding")
    world = recipe.launch.nproc_per_node * recipe.launch.nnodes
    shard = world if recipe.launch.strategy == "fsdp" else 1
    weights, grads = 4 * n // shard, 4 * n // shard
    state = sum(prod(t["shape"]) * _state_bytes(t, recipe.optimizer) for t in tensors) // shard
    return {
        "params": n,
        "non_embedding_params": n - n_emb,
        "flops_per_token": flops_per_token(recipe.model, n),
        "memory_per_gpu_bytes": {"weights": weights, "grads": grads, "optimizer_state": state,
                                 "total": weights + grads + state},
    }


def plan_hash(plan: dict) -> str:
    blob = json.dumps({k: plan[k] for k in HASHED}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resume_fields(recipe) -> dict:
    """The recipe's EXACTNESS_FIELDS as {dotted key: value}: what `mupctl resume` compares with the
    run's `plan.json` to catch a `recipe.yaml` edited by hand after the run started."""
    def flat(d: dict, prefix: str = ""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return {k: v for k, v in flat(recipe.model_dump(mode="json")) if k.startswith(EXACTNESS_FIELDS)}


def build_plan(recipe, run_dir: str = RUN_DIR_PLACEHOLDER) -> dict:
    """Compile a validated `Recipe` into the plan dict documented in docs/plan-json.md."""
    policy = compile_policy(recipe)
    opt = recipe.optimizer
    plan = {
        "version": PLAN_VERSION,
        "name": recipe.name,
        "model": asdict(derive_shape(recipe.model)) | {
            k: getattr(recipe.model, k) for k in ("activation", "norm", "position", "rope_theta", "bias",
                                                   "norm_eps", "tie_embeddings")},
        **{k: policy[k] for k in ("recipe", "optimizer")},
        "optimizer_settings": {"betas": list(opt.betas), "momentum": opt.momentum, "nesterov": opt.nesterov,
                               "muon": opt.muon.model_dump() if opt.name == "muon" else None},
        **{k: v for k, v in policy.items() if k not in ("recipe", "optimizer")},
        "summary": summary(recipe, policy["tensors"]),
        "schedule": recipe.schedule.model_dump() | {"steps": recipe.train.steps},
        "launch": {
            "argv": torchrun_argv(recipe, run_dir),
            "nproc_per_node": recipe.launch.nproc_per_node,
            "nnodes": recipe.launch.nnodes,
            "world_size": recipe.launch.nproc_per_node * recipe.launch.nnodes,
            "strategy": recipe.launch.strategy,
            "device": recipe.launch.device,
        },
        "resume_fields": resume_fields(recipe),
    }
    plan["hash"] = plan_hash(plan)
    return plan
