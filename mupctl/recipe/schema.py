"""The recipe schema: one pydantic model per YAML section, strict (unknown keys are errors).

Every field has a default so a recipe can be ten lines. Cross-field checks that need the whole
recipe (shapes, batch divisibility) live in `mupctl.recipe.checks`; the μP rules live in
`mupctl.scaling` and nowhere else.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mupctl.scaling.optimizers import NAMES as OPTIMIZER_NAMES

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
MAX_STEPS = 10**8 - 1  # checkpoint directories are step_NNNNNNNN
MAX_FACTOR = 1e6  # LRs, weight decays and multipliers: far past any real value, and their products in the
# plan (× m ≤ 2**20, × the per-role factors) stay finite in float32, so a typo fails here, not in a worker


class Section(BaseModel):
    """Unknown keys, ±inf/NaN and booleans given for numbers are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v, info: ValidationInfo):
        """YAML `true` must not become 1 or 1.0 (pydantic's lax mode would accept it)."""
        if isinstance(v, bool):
            ann = cls.model_fields[info.field_name].annotation
            kinds = set(typing.get_args(ann)) | {ann}
            if kinds & {int, float} and bool not in kinds and Literal not in {typing.get_origin(k) for k in kinds}:
                raise ValueError("must be a number, not a boolean")
        return v


class ModelConfig(Section):
    """Decoder-only dense transformer (pre-norm)."""

    d_model: int = Field(128, gt=0, le=2**20, description="residual stream width")
    n_layers: int = Field(2, gt=0, le=2**14, description="number of transformer blocks")
    n_heads: int = Field(4, gt=0, le=2**16, description="query heads; d_head = d_model / n_heads")
    n_kv_heads: Optional[int] = Field(None, gt=0, description="key/value heads (GQA); default n_heads")
    d_ff: Optional[int] = Field(None, gt=0, le=2**24, description="MLP hidden size; default mlp_ratio * d_model")
    mlp_ratio: float = Field(4.0, gt=0, le=64, description="d_ff / d_model when d_ff is not set")
    vocab_size: int = Field(256, ge=2, le=2**24, description="256 for the byte tokenizer")
    seq_len: int = Field(256, gt=0, le=2**24, description="training context length in tokens")
    tie_embeddings: bool = Field(False, description="share the token embedding with the output head")
    activation: Literal["swiglu", "gelu"] = "swiglu"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    position: Literal["rope", "learned"] = "rope"
    rope_theta: float = Field(10000.0, gt=0, le=1e12)
    bias: bool = Field(False, description="biases in linear layers (and LayerNorm)")
    norm_eps: float = Field(1e-5, gt=0, le=1)
    init_std: Optional[float] = Field(
        None, gt=0, le=1e3, description="sigma: base init std tuned at the base shape; default 1/sqrt(base d_model), under none 1/sqrt(d_model)")


class BaseShape(Section):
    """The shape the hyperparameters were tuned at. Unset fields default to the model's own."""

    d_model: Optional[int] = Field(None, gt=0, le=2**20)
    n_layers: Optional[int] = Field(None, gt=0, le=2**14)
    d_head: Optional[int] = Field(None, gt=0, le=2**20)


class RoleFactors(Section):
    """A constant factor per parameter role on one base value (1 = the rule as derived). Constants
    tuned at the base shape transfer under mup/depth_mup like η does (Tensor Programs V tunes such
    per-role constants on the small model); the width and depth exponents apply on top."""

    embedding: float = Field(1.0, gt=0, le=MAX_FACTOR)
    hidden: float = Field(1.0, gt=0, le=MAX_FACTOR)
    hidden_out: float = Field(1.0, gt=0, le=MAX_FACTOR)
    output: float = Field(1.0, gt=0, le=MAX_FACTOR)
    vector: float = Field(1.0, gt=0, le=MAX_FACTOR)


class ScalingConfig(Section):
    recipe: Literal["none", "mup", "depth_mup"] = "none"
    base: BaseShape = BaseShape()
    width_mult: Optional[float] = Field(
        None, ge=2**-20, le=2**20, description="m = d_model / base width, instead of scaling.base.d_model (legacy mup_width_mult)")
    depth_alpha: Optional[float] = Field(
        None, ge=0.5, le=1, description="depth_mup only: CompleteP's alpha, branch multiplier lambda^-alpha, "
        "in-branch LR lambda^(alpha-1); default 1")
    alpha_in: float = Field(1.0, gt=0, le=MAX_FACTOR, description="embedding output multiplier")
    alpha_out: float = Field(1.0, gt=0, le=MAX_FACTOR, description="logit multiplier (divided by m under mup)")
    alpha_attn: Optional[float] = Field(
        None, gt=0, le=MAX_FACTOR, description="attention scale numerator; default sqrt(base.d_head)")
    readout_zero_init: bool = Field(False, description="zero-init the (untied) output head")
    zero_init_query: bool = Field(False, description="zero-init the query projection")
    lr_mult: RoleFactors = Field(RoleFactors(), description="per-role factor on the base LR (Muon matrices: on optimizer.muon.lr)")
    init_mult: RoleFactors = Field(RoleFactors(), description="per-role factor on the base init std sigma (vector: must stay 1)")
    wd_mult: RoleFactors = Field(RoleFactors(), description="per-role factor on the base weight decay")
    eps_mult: RoleFactors = Field(RoleFactors(), description="per-role factor on the base Adam eps")


class MuonConfig(Section):
    """torch.optim.Muon settings for 2-D hidden matrices (other tensors use AdamW)."""

    lr: float = Field(0.02, gt=0, le=MAX_FACTOR)
    momentum: float = Field(0.95, ge=0, lt=1)
    nesterov: bool = True
    ns_steps: int = Field(5, gt=0, le=100)
    weight_decay: float = Field(0.0, ge=0, le=MAX_FACTOR)
    adjust_lr_fn: Literal["original", "match_rms_adamw"] = "original"
    distributed: Literal["auto", "layerwise", "replicated"] = Field(
        "auto", description="who runs Newton-Schulz: layerwise = each rank its share of the matrices (results "
        "all-gathered under DDP, scattered back to the shards under FSDP2), replicated = every rank all of them; "
        "auto = layerwise when the world size > 1")
    batched_ns: bool = Field(True, description="Newton-Schulz of same-shape matrices as one batched matmul chain "
                             "(false: one matrix at a time, as torch.optim.Muon)")


class OptimizerConfig(Section):
    name: Literal[OPTIMIZER_NAMES] = "adamw"  # the registry, mupctl.scaling.optimizers
    lr: float = Field(3e-3, gt=0, le=MAX_FACTOR, description="eta: base LR (for muon: the AdamW LR of non-matrix tensors)")
    betas: Tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0, le=1, description="epsilon: base Adam eps")
    weight_decay: Optional[float] = Field(
        None, ge=0, le=MAX_FACTOR, description="base weight decay; default 0.1 for adamw/muon, 0 for adam/sgd")
    decay_vectors: bool = Field(False, description="apply weight decay to norm gains and biases")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = False
    muon: MuonConfig = MuonConfig()

    @field_validator("betas")
    @classmethod
    def _betas(cls, v):
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class ScheduleConfig(Section):
    name: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR / peak LR")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: fraction of steps spent decaying")


class TrainConfig(Section):
    steps: int = Field(200, gt=0, le=MAX_STEPS, description="optimizer steps (checkpoint dirs have 8 digits)")
    global_batch: int = Field(16, gt=0, description="sequences per optimizer step, all ranks")
    micro_batch: int = Field(16, gt=0, description="sequences per forward pass per rank")
    precision: Literal["auto", "fp32", "bf16", "fp8"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: Literal["auto", True, False] = Field("auto", description="auto: on for CUDA, off for CPU")
    activation_checkpointing: bool = False
    seed: int = Field(0, ge=0, le=MAX_SEED)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables")
    eval_interval: int = Field(50, ge=0, description="steps between validation passes; 0 disables")
    eval_batches: int = Field(4, gt=0, description="global batches per validation pass (fixed val batches)")
    log_interval: int = Field(10, gt=0)
    telemetry_interval: int = Field(50, ge=0, description="steps between muP health rows; 0 disables")
    deterministic: bool = Field(False, description="bit-identical reruns on the same GPU (deterministic "
                                "algorithms, cuBLAS workspace, cuDNN, SDPA and Inductor choices); costs speed")


class DataConfig(Section):
    source: Literal["embedded", "bin", "synthetic"] = "embedded"
    path: Optional[str] = Field(None, min_length=1, description="directory of train/val .bin shards (source: bin); "
                                "a relative path is taken from the current directory and stored absolute")
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="embedded corpus held out for validation")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v):
        """Absolute from here on, so that the run's plan finds its data from any directory (resume, eval, export)."""
        return None if v is None else str(Path(v).expanduser().absolute())


class LaunchConfig(Section):
    nproc_per_node: int = Field(1, gt=0)
    nnodes: int = Field(1, gt=0)
    node_rank: Optional[int] = Field(None, ge=0)
    rdzv_backend: Literal["c10d", "etcd", "etcd-v2", "static"] = "c10d"
    rdzv_endpoint: Optional[str] = Field(None, description="host:port; required when nnodes > 1")
    rdzv_id: Optional[str] = None
    max_restarts: int = Field(0, ge=0, le=10**6, description="worker-group restarts from the latest checkpoint")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: weights replicated; fsdp: FSDP2, weights, grads and optimizer state sharded "
                           "over ranks, for models whose state does not fit one GPU")
    device: Literal["auto", "cuda", "cpu"] = "auto"

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, v):
        host, sep, port = (v or "").rpartition(":")
        if v is not None and not (sep and host.strip() and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError("must be host:port with a port in 1..65535, e.g. node0:29500")
        return v


class CheckpointConfig(Section):
    interval: int = Field(100, ge=0, description="steps between checkpoints; 0 disables")
    keep_last: int = Field(2, gt=0, le=10**6)
    async_save: bool = Field(False, description="overlap the write with training (CUDA)")


class LoggingConfig(Section):
    wandb: Literal["disabled", "offline", "online"] = Field(
        "disabled", description="online needs W&B credentials (`wandb login` or WANDB_API_KEY), checked before launch")
    project: str = "mupctl"
    entity: Optional[str] = None


class RunConfig(Section):
    root: str = Field("runs", min_length=1, description="directory that holds run directories")


class Recipe(Section):
    name: str = Field("run", min_length=1, max_length=100)
    model: ModelConfig = ModelConfig()
    scaling: ScalingConfig = ScalingConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    launch: LaunchConfig = LaunchConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    run: RunConfig = RunConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' (first a letter or digit)")
        return v
