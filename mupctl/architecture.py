"""The model's parameter tensors as pure data (no torch): names, shapes, roles, residual-branch flag.

This is the contract between the scaling compiler (which gives every tensor its policy) and the
torch model (which must create exactly these tensors; `mupctl plan --verify` checks it). Roles:

- ``embedding``: token embedding (and learned positions); the tied head shares it.
- ``hidden``: attention fused q/k/v, MLP up (fused gate+up for SwiGLU).
- ``hidden_out``: residual-branch output projections (attention out, MLP down).
- ``output``: the untied LM head.
- ``vector``: norm gains and biases.

Every block tensor sits inside a residual branch (``in_branch``); embedding, final norm and head
do not. Width-like dimensions (d_model, heads·d_head, d_ff) all grow with the width multiplier m.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

ROLES = ("embedding", "hidden", "hidden_out", "output", "vector")


@dataclass(frozen=True)
class Shape:
    """Derived model dimensions."""

    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_ff: int
    vocab_size: int
    seq_len: int


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    role: str
    in_branch: bool
    init: str  # "normal" | "ones" | "zeros"
    zero_rows: int = 0  # leading rows initialized to zero (zero_init_query on the fused qkv)

    @property
    def numel(self) -> int:
        return prod(self.shape)


def derive_shape(model) -> Shape:
    """Shape from a `ModelConfig` (assumes `mupctl.recipe.checks` passed)."""
    d_head = model.d_model // model.n_heads
    d_ff = model.d_ff if model.d_ff is not None else int(round(model.mlp_ratio * model.d_model))
    return Shape(model.d_model, model.n_layers, model.n_heads, model.n_kv_heads or model.n_heads,
                 d_head, d_ff, model.vocab_size, model.seq_len)


def tensor_specs(model, zero_init_query: bool = False) -> list[TensorSpec]:
    """Every parameter tensor of the dense GPT, in the model's `named_parameters()` order."""
    s = derive_shape(model)
    d, q_dim, kv_dim = s.d_model, s.n_heads * s.d_head, s.n_kv_heads * s.d_head
    up = 2 * s.d_ff if model.activation == "swiglu" else s.d_ff
    layernorm_bias = model.norm == "layernorm" and model.bias
    specs = [TensorSpec("tok_emb.weight", (s.vocab_size, d), "embedding", False, "normal")]
    if model.position == "learned":
        specs.append(TensorSpec("pos_emb.weight", (s.seq_len, d), "embedding", False, "normal"))

    def norm(prefix: str, in_branch: bool) -> list[TensorSpec]:
        out = [TensorSpec(f"{prefix}.weight", (d,), "vector", in_branch, "ones")]
        if layernorm_bias:
            out.append(TensorSpec(f"{prefix}.bias", (d,), "vector", in_branch, "zeros"))
        return out

    def linear(prefix: str, out_f: int, in_f: int, role: str, zero_rows: int = 0) -> list[TensorSpec]:
        out = [TensorSpec(f"{prefix}.weight", (out_f, in_f), role, True, "normal", zero_rows)]
        if model.bias:
            out.append(TensorSpec(f"{prefix}.bias", (out_f,), "vector", True, "zeros"))
        return out

    for i in range(s.n_layers):
        b = f"blocks.{i}"
        specs += norm(f"{b}.attn_norm", True)
        specs += linear(f"{b}.attn.qkv", q_dim + 2 * kv_dim, d, "hidden", q_dim if zero_init_query else 0)
        specs += linear(f"{b}.attn.proj", d, q_dim, "hidden_out")
        specs += norm(f"{b}.mlp_norm", True)
        specs += linear(f"{b}.mlp.up", up, d, "hidden")
        specs += linear(f"{b}.mlp.down", d, s.d_ff, "hidden_out")
    specs += norm("norm_f", False)
    if not model.tie_embeddings:
        specs.append(TensorSpec("lm_head.weight", (s.vocab_size, d), "output", False, "normal"))
    return specs


def flops_per_token(model, n_params: int) -> int:
    """Training FLOPs per token: 6·N + 12·L·d·T (N = all parameters, T = seq_len).

    The same formula as the throughput anchor (PaLM appendix B with the attention term), so MFU
    figures compare directly. For tied embeddings N counts the shared tensor once.
    """
    return 6 * n_params + 12 * model.n_layers * model.d_model * model.seq_len
