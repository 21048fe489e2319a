"""The plan: everything a run needs, typed, and the one object a worker reads (`RUN_DIR/plan.json`).

plan = scaling policy (from `mupctl.scaling`: per-tensor values, multipliers, role table) + model
shape + size/FLOPs/memory summary + the recipe's resolved `train`, `schedule`, `data`,
`checkpoint`, `logging` and `launch` sections. The torchrun argv is not part of it: the launcher
derives that from `plan.launch` (`mupctl.launch.command`). `hash` covers the parameterization
(shape, policy, optimizer settings), which every checkpoint records.

`resume` compares the saved plan with the new one field by field (`changed_fields`); only the
fields in `RESUMABLE` may differ without `--force`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from math import prod
from pathlib import Path
from typing import Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict

from mupctl.architecture import Shape, derive_shape, flops_per_token
from mupctl.recipe.schema import (CheckpointConfig, DataConfig, LaunchConfig, LoggingConfig, MuonConfig,
                                  ScheduleConfig, TrainConfig)
from mupctl.scaling import compile_policy
from mupctl.scaling.optimizers import NAMES as OPTIMIZER_NAMES, state_bytes

PLAN_VERSION = 2  # 2: train/data/checkpoint/logging sections, no launch.argv, no resume_fields
HASHED = ("version", "model", "recipe", "optimizer", "optimizer_settings", "width_mult", "depth_mult",
          "head_dim_mult", "base", "multipliers", "tensors")

# Plan fields (a dotted prefix covers everything under it) that may differ between the plan a run
# started with and the one `mupctl resume` would launch: they change how long the run goes, how it
# is logged, checkpointed and launched, or how fast a step runs, not what a step computes. Any
# other difference breaks exact resume and needs --force.
RESUMABLE = ("name", "train.steps", "schedule.steps", "train.micro_batch", "train.compile",
             "train.activation_checkpointing", "train.deterministic", "train.log_interval",
             "train.eval_interval", "train.eval_batches", "train.telemetry_interval", "checkpoint", "logging",
             "launch", "summary.memory_per_gpu_bytes", "warnings", "optimizer_settings.muon.distributed",
             "optimizer_settings.muon.batched_ns")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ModelShape(Shape):
    """The model the plan describes: the derived dimensions (`architecture.Shape`) and the
    architecture switches."""

    activation: Literal["swiglu", "gelu"]
    norm: Literal["rmsnorm", "layernorm"]
    position: Literal["rope", "learned"]
    rope_theta: float
    bias: bool
    norm_eps: float
    tie_embeddings: bool


class TensorPolicy(Frozen):
    """One parameter tensor: what it is, how it starts, how it is updated (before the schedule)."""

    name: str
    shape: Tuple[int, ...]
    role: str
    in_branch: bool
    init: Literal["normal", "ones", "zeros"]
    init_std: float
    zero_rows: int
    lr: float
    eps: Optional[float]
    weight_decay: float
    optimizer: Literal[OPTIMIZER_NAMES]  # the registered optimizer (mupctl.scaling.optimizers) updating it


class Multipliers(Frozen):
    """Forward multipliers: embedding output, logits (on the final hidden state), attention scores,
    residual branches."""

    embedding: float
    output_logits: float
    attention_scale: float
    residual_branch: float


class OptimizerSettings(Frozen):
    betas: Tuple[float, float]
    momentum: float
    nesterov: bool
    muon: Optional[MuonConfig]


class Schedule(ScheduleConfig):
    steps: int


class Launch(LaunchConfig):
    world_size: int


class Plan(Frozen):
    """The run (docs/plan-json.md). Field order is the order `changed_fields` reports differences in:
    the sections a person edits first, derived values after."""

    version: Literal[2]  # PLAN_VERSION: a plan of another version does not parse
    name: str
    model: ModelShape
    train: TrainConfig
    schedule: Schedule
    data: DataConfig
    recipe: Literal["none", "mup", "depth_mup"]
    optimizer: Literal[OPTIMIZER_NAMES]
    optimizer_settings: OptimizerSettings
    width_mult: float
    depth_mult: float
    depth_alpha: Optional[float]
    head_dim_mult: float
    base: dict[str, int]
    multipliers: Multipliers
    roles: dict[str, dict]
    multiplier_exponents: dict[str, dict[str, float]]
    tensors: Tuple[TensorPolicy, ...]
    summary: dict
    checkpoint: CheckpointConfig
    logging: LoggingConfig
    launch: Launch
    warnings: Tuple[str, ...]
    hash: str

    def to_json(self) -> dict:
        """The JSON object of plan.json and `mupctl plan --json`."""
        return self.model_dump(mode="json")

    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch * self.model.seq_len


def summary(recipe, tensors: list[dict]) -> dict:
    """Parameter counts, training FLOPs per token and a per-GPU memory estimate (fp32 master
    weights + fp32 grads + optimizer state; divided by world size under FSDP; activations excluded)."""
    n = sum(prod(t["shape"]) for t in tensors)
    n_emb = sum(prod(t["shape"]) for t in tensors if t["role"] == "embedding")
    world = recipe.launch.nproc_per_node * recipe.launch.nnodes
    shard = world if recipe.launch.strategy == "fsdp" else 1
    weights, grads = 4 * n // shard, 4 * n // shard
    state = sum(prod(t["shape"]) * state_bytes(t["optimizer"], recipe.optimizer) for t in tensors) // shard
    return {
        "params": n,
        "non_embedding_params": n - n_emb,
        "flops_per_token": flops_per_token(recipe.model, n),
        "memory_per_gpu_bytes": {"weights": weights, "grads": grads, "optimizer_state": state,
                                 "total": weights + grads + state},
    }


def _unresumable(value, prefix: str):
    """`value` without the mapping keys whose dotted field (under `prefix`) is `resumable`."""
    if not isinstance(value, dict):
        return value
    return {k: _unresumable(v, f"{prefix}{k}.") for k, v in value.items() if not resumable(f"{prefix}{k}")}


def plan_hash(plan: dict) -> str:
    """16 hex digits of SHA-256 over the HASHED fields of a plan's JSON object, less their resumable
    parts (e.g. `optimizer_settings.muon.distributed`: how Newton-Schulz is spread over ranks)."""
    blob = json.dumps({k: _unresumable(plan[k], f"{k}.") for k in HASHED}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compile_plan(recipe) -> Plan:
    """Compile a validated `Recipe` into its `Plan`."""
    policy = compile_policy(recipe)
    opt = recipe.optimizer
    plan = {
        "version": PLAN_VERSION,
        "name": recipe.name,
        "model": asdict(derive_shape(recipe.model)) | {
            k: getattr(recipe.model, k) for k in ("activation", "norm", "position", "rope_theta", "bias",
                                                   "norm_eps", "tie_embeddings")},
        "train": recipe.train.model_dump(mode="json"),
        "schedule": recipe.schedule.model_dump(mode="json") | {"steps": recipe.train.steps},
        "data": recipe.data.model_dump(mode="json"),
        "optimizer_settings": {"betas": list(opt.betas), "momentum": opt.momentum, "nesterov": opt.nesterov,
                               "muon": opt.muon.model_dump() if opt.name == "muon" else None},
        **policy,
        "summary": summary(recipe, policy["tensors"]),
        "checkpoint": recipe.checkpoint.model_dump(mode="json"),
        "logging": recipe.logging.model_dump(mode="json"),
        "launch": recipe.launch.model_dump(mode="json") | {
            "world_size": recipe.launch.nproc_per_node * recipe.launch.nnodes},
    }
    plan["hash"] = plan_hash(plan)
    return Plan.model_validate(plan)


def build_plan(recipe) -> dict:
    """`compile_plan` as the JSON object (what `mupctl plan --json` prints)."""
    return compile_plan(recipe).to_json()


def read_plan(path: Path) -> Plan:
    """The plan in `path` (plan.json). Raises ValueError (pydantic's ValidationError is one) when the
    file is not a plan of this version, OSError when it cannot be read."""
    return Plan.model_validate_json(Path(path).read_bytes())


def write_plan(path: Path, plan: Plan) -> None:
    from mupctl.paths import atomic_write
    atomic_write(path, json.dumps(plan.to_json(), indent=2) + "\n")


def changed_fields(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted field, old value, new value) of every leaf that differs, recursing into mappings in
    `new`'s key order, then keys only `old` has; lists of equal length are compared item by item
    (`tensors.3.lr`)."""
    out = []
    for key in list(new) + [k for k in old if k not in new]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            a, b = dict(enumerate(a)), dict(enumerate(b))
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def resumable(field: str) -> bool:
    """Whether plan field `field` (dotted) may change on resume without --force (`RESUMABLE`)."""
    return any(field == f or field.startswith(f + ".") for f in RESUMABLE)


def plan_changes(old: Plan, new: Plan) -> tuple[list, list]:
    """(resumable, breaking) differences from `old` to `new`, each [(field, old, new)] in plan order;
    `hash` is left out (it digests the other fields)."""
    changes = [c for c in changed_fields(old.to_json(), new.to_json()) if c[0] != "hash"]
    return [c for c in changes if resumable(c[0])], [c for c in changes if not resumable(c[0])]
