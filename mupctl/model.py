"""A plain decoder-only transformer built from a `Plan` (nanoGPT style, pre-norm).

    x₀   = α_emb · (E[idx] (+ P[pos]))                      embedding
    xₗ₊₁ = xₗ + r · Attn(norm(xₗ)),  then  + r · MLP(norm(·))  per block (r = residual_branch)
    logits = (α_out · norm_f(x_L)) · Wᵀ                      W = lm_head, or E when tied

The plan decides everything numeric: the shape (`plan.model`, a `ModelShape`), the forward
multipliers (`plan.multipliers`) and each tensor's init (`plan.tensors`). Every parameter's role is
declared by the module that creates it (`Module.roles`), never guessed from its name, and the
parameter names equal the plan's tensor names (`mupctl.architecture.tensor_specs`).

Multipliers cost nothing extra: the branch multiplier is the `alpha` of the residual add, the
attention scale is SDPA's `scale`, α_out multiplies the d_model-wide hidden state (not the
vocab-wide logits), and multipliers equal to 1 are skipped.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mupctl.plan import ModelShape, Multipliers, Plan


class Tag(NamedTuple):
    role: str
    in_branch: bool


def rms(x: torch.Tensor) -> torch.Tensor:
    """sqrt(mean(x²)) over all elements, in fp32, detached."""
    return x.detach().float().pow(2).mean().sqrt()


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in fp32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))


def head_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """loss_fn of the logits h·Wᵀ. Compiled, the fp32 upcast fuses into the loss kernels, so the
    (tokens × vocab) logits exist once, in the matmul's dtype, and never in fp32."""
    return loss_fn(F.linear(h, weight), targets)


def rope_tables(seq_len: int, d_head: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of the angles t·θ^(-2i/d_head), shape (seq_len, d_head/2), fp32."""
    inv_freq = theta ** (-torch.arange(0, d_head, 2, device=device, dtype=torch.float32) / d_head)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+d/2}) of x (B, H, T, d) by its angle (half-split layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class Linear(nn.Module):
    """y = x Wᵀ (+ b); W (d_out, d_in) has the given role, b is a `vector`."""

    def __init__(self, d_in: int, d_out: int, role: str, bias: bool, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in, device=device))
        self.bias = nn.Parameter(torch.empty(d_out, device=device)) if bias else None
        self.roles = {"weight": role} | ({"bias": "vector"} if bias else {})

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    """Lookup table E (num, dim); role `embedding`."""

    def __init__(self, num: int, dim: int, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim, device=device))
        self.roles = {"weight": "embedding"}

    def forward(self, idx):
        return F.embedding(idx, self.weight)


class Norm(nn.Module):
    """RMSNorm x/rms(x)·g, or LayerNorm (x-μ)/σ·g (+ b); gain and bias are `vector`s."""

    def __init__(self, dim: int, kind: str, bias: bool, eps: float, device=None):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.empty(dim, device=device))
        has_bias = kind == "layernorm" and bias
        self.bias = nn.Parameter(torch.empty(dim, device=device)) if has_bias else None
        self.roles = {"weight": "vector"} | ({"bias": "vector"} if has_bias else {})

    def forward(self, x):
        if self.kind == "rmsnorm":
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    """Causal GQA self-attention: softmax(q·kᵀ · scale) v with fused qkv rows [q; k; v]."""

    def __init__(self, shape: ModelShape, scale: float, device=None):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head, self.scale = shape.n_heads, shape.n_kv_heads, shape.d_head, scale
        q_dim, kv_dim = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        self.split = (q_dim, kv_dim, kv_dim)
        self.qkv = Linear(shape.d_model, q_dim + 2 * kv_dim, "hidden", shape.bias, device)
        self.proj = Linear(q_dim, shape.d_model, "hidden_out", shape.bias, device)

    def forward(self, x, rope):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=-1)
        q = q.view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        k = k.view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate) ⊙ up) with fused rows [gate; up]; or GELU: down(gelu(up))."""

    def __init__(self, shape: ModelShape, device=None):
        super().__init__()
        self.swiglu = shape.activation == "swiglu"
        self.up = Linear(shape.d_model, (2 if self.swiglu else 1) * shape.d_ff, "hidden", shape.bias, device)
        self.down = Linear(shape.d_ff, shape.d_model, "hidden_out", shape.bias, device)

    def forward(self, x):
        h = self.up(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(h))


class Block(nn.Module):
    """x + r·Attn(norm(x)), then + r·MLP(norm(·)); r is the residual-branch multiplier."""

    def __init__(self, shape: ModelShape, mult: Multipliers, device=None):
        super().__init__()
        norm = (shape.d_model, shape.norm, shape.bias, shape.norm_eps, device)
        self.attn_norm = Norm(*norm)
        self.attn = Attention(shape, mult.attention_scale, device)
        self.mlp_norm = Norm(*norm)
        self.mlp = MLP(shape, device)
        self.branch_mult = mult.residual_branch

    def forward(self, x, rope, record: bool = False):
        """x + r·attn(norm(x)), then + r·mlp(norm(·)) (r: the residual-branch multiplier). With
        `record`, also the RMS of both branch outputs as a tensor (returned, not appended to a list
        argument: FSDP2's input casting copies containers, so a list would come back empty)."""
        a = self.attn(self.attn_norm(x), rope)
        x = torch.add(x, a, alpha=self.branch_mult)
        f = self.mlp(self.mlp_norm(x))
        out = torch.add(x, f, alpha=self.branch_mult)
        return (out, torch.stack((rms(a), rms(f))) * self.branch_mult) if record else out


class GPT(nn.Module):
    """The model of a plan. `record`: set to a dict to collect activation RMS on the next forward."""

    def __init__(self, plan: Plan, device=None, activation_checkpointing: bool = False):
        super().__init__()
        shape, mult = plan.model, plan.multipliers
        self.tensor_plan = plan.tensors
        self.rope_theta, self.d_head = shape.rope_theta, shape.d_head
        self.emb_mult, self.out_mult = mult.embedding, mult.output_logits
        self.activation_checkpointing = activation_checkpointing
        self.record: dict | None = None
        self.head_loss = head_loss

        self.tok_emb = Embedding(shape.vocab_size, shape.d_model, device)
        self.pos_emb = Embedding(shape.seq_len, shape.d_model, device) if shape.position == "learned" else None
        self.blocks = nn.ModuleList(Block(shape, mult, device) for _ in range(shape.n_layers))
        self.norm_f = Norm(shape.d_model, shape.norm, shape.bias, shape.norm_eps, device)
        self.lm_head = None if shape.tie_embeddings else Linear(shape.d_model, shape.vocab_size, "output", False, device)
        if self.pos_emb is None:  # RoPE tables, filled by init_weights
            for name in ("rope_cos", "rope_sin"):
                self.register_buffer(name, torch.empty(shape.seq_len, shape.d_head // 2, device=device),
                                     persistent=False)

        in_branch = {mod for block in self.blocks for mod in block.modules()}
        self.tags = {f"{prefix}.{name}": Tag(role, mod in in_branch)
                     for prefix, mod in self.named_modules() for name, role in getattr(mod, "roles", {}).items()}
        self.init_weights()

    def compile_pieces(self) -> None:
        """torch.compile every block and the head's loss, each on its own, instead of the whole
        model: what FSDP2 needs (one FSDP unit per block, its hooks outside the compiled graphs).
        Call before `fully_shard`. Only the embedding lookup and the final norm stay eager."""
        for block in self.blocks:
            block.compile()
        self.head_loss = torch.compile(head_loss)

    def param_roles(self) -> dict[str, str]:
        """Parameter name → role, as declared by the creating modules."""
        return {name: tag.role for name, tag in self.tags.items()}

    @torch.no_grad()
    def init_weights(self) -> None:
        """Init every tensor per its plan entry: "normal" → N(0, init_std²) with the first
        `zero_rows` rows zero (init_std 0 → zeros); "ones"; "zeros". Also computes the RoPE
        tables, so a model built on `meta` is usable after `to_empty(device=...)` + this call."""
        params = dict(self.named_parameters())
        for t in self.tensor_plan:
            p = params[t.name]
            if t.init == "normal" and t.init_std > 0:
                p.normal_(0.0, t.init_std)
                p[: t.zero_rows].zero_()
            else:
                p.fill_(1.0 if t.init == "ones" else 0.0)
        if self.pos_emb is None:
            self.rope_cos, self.rope_sin = rope_tables(self.rope_cos.shape[0], self.d_head, self.rope_theta,
                                                       self.rope_cos.device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids idx (B, T); the mean loss instead when targets are given."""
        T = idx.shape[1]
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb.weight[:T]
        if self.emb_mult != 1.0:
            x = x * self.emb_mult
        x_emb = x
        rope = None if self.pos_emb is not None else (self.rope_cos[:T], self.rope_sin[:T])
        record, stats = self.record is not None, []
        for block in self.blocks:
            if self.activation_checkpointing and torch.is_grad_enabled():
                out = checkpoint(block, x, rope, record, use_reentrant=False)
            else:
                out = block(x, rope, record)
            if record:
                out, branch_rms = out
                stats.append(branch_rms)
            x = out
        h = self.norm_f(x)
        if self.out_mult != 1.0:
            h = h * self.out_mult
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        if targets is not None and not record:
            return self.head_loss(h, weight, targets)
        logits = F.linear(h, weight)
        if record:
            branch = torch.stack(stats).mean(0)  # (attn_out, mlp_out) averaged over layers
            logits32 = logits.detach().float()
            self.record.update(embedding=rms(x_emb), attn_out=branch[0], mlp_out=branch[1], residual=rms(x),
                               logits=rms(logits32),
                               logits_centered=rms(logits32 - logits32.mean(-1, keepdim=True)))
        return logits if targets is None else loss_fn(logits, targets)
