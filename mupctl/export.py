"""`mupctl export --format hf`: a checkpoint as a Hugging Face transformers model directory that
`AutoModelForCausalLM.from_pretrained(DIR)` loads with no custom code, μP multipliers folded in.

Target: Llama-style blocks (rmsnorm, rope, swiglu; GQA allowed) → `LlamaForCausalLM`; GPT-2-style
blocks (layernorm, learned positions, gelu) → `GPT2LMHeadModel`. With α_emb, α_out (the plan's
`output_logits`, already α_out/m under mup), s (`attention_scale`), r (`residual_branch`), d_head:

    E' = α_emb·E,  P' = α_emb·P                          x₀ = α_emb(E[idx] + P[t]) = E'[idx] + P'[t]
    W_q' = c·W_q,  b_q' = c·b_q,  c = s·√d_head          (c q)·k / √d_head = s q·k; RoPE is linear in q
    W_o' = r·W_o,  W_down' = r·W_down (and their biases) x + r·f(x) = x + f'(x)
    untied: W_head' = α_out·W_head                        logits = (α_out h) Wᵀ = h W'ᵀ
    tied:   E' = α_emb·E as above, final-norm gain and bias × α_out/α_emb
            logits = (α_out/α_emb · norm_f(x)) (α_emb E)ᵀ = α_out norm_f(x) Eᵀ

The tied case keeps one tensor (as trained) by moving the ratio into the final norm, which is exact
and needs no second copy of E. Norm eps, RoPE θ (HF's `rotate_half` is mupctl's half-split layout)
and the GELU (exact erf: HF's `gelu`, not the tanh `gelu_new`) carry over; a missing bias is written
as zeros where GPT-2 always has one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch

from mupctl.errors import UserError
from mupctl.paths import atomic_write, check_dir
from mupctl.plan import ModelShape, Plan

STYLES = {"llama": {"norm": "rmsnorm", "position": "rope", "activation": "swiglu"},
          "gpt2": {"norm": "layernorm", "position": "learned", "activation": "gelu"}}
DTYPES = {"fp32": (torch.float32, "float32"), "bf16": (torch.bfloat16, "bfloat16")}


def target_style(shape: ModelShape) -> str:
    """"llama" or "gpt2"; any other combination is a `UserError` naming the first field that differs
    from the style it shares the most fields with."""
    votes = {style: sum(getattr(shape, k) == v for k, v in want.items()) for style, want in STYLES.items()}
    style = max(votes, key=votes.get)
    for key, want in STYLES[style].items():
        if getattr(shape, key) != want:
            other = "gpt2" if style == "llama" else "llama"
            raise UserError(f"is {getattr(shape, key)!r}; a Hugging Face export needs Llama-style blocks "
                            f"({', '.join(STYLES['llama'].values())}) or GPT-2-style blocks "
                            f"({', '.join(STYLES['gpt2'].values())}), and this model mixes them (closest: {style}, "
                            f"which needs {want!r}; {other} does not fit either)", f"model.{key}")
    if style == "gpt2" and shape.n_kv_heads != shape.n_heads:
        raise UserError(f"is {shape.n_kv_heads} (GQA); GPT2LMHeadModel has no grouped-query attention: use "
                        "Llama-style blocks or n_kv_heads = n_heads", "model.n_kv_heads")
    return style


def fold(plan: Plan, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of `state` (mupctl tensor names) with every forward multiplier folded in (module docstring)."""
    shape, mult = plan.model, plan.multipliers
    out = {k: v.detach().clone() for k, v in state.items()}

    def scale(name: str, factor: float, rows: slice = slice(None)) -> None:
        if name in out and factor != 1.0:
            out[name][rows] *= factor

    for name in ("tok_emb.weight", "pos_emb.weight"):
        scale(name, mult.embedding)
    q_rows = slice(0, shape.n_heads * shape.d_head)
    c = mult.attention_scale * math.sqrt(shape.d_head)
    for i in range(shape.n_layers):
        for kind in ("weight", "bias"):
            scale(f"blocks.{i}.attn.qkv.{kind}", c, q_rows)
            scale(f"blocks.{i}.attn.proj.{kind}", mult.residual_branch)
            scale(f"blocks.{i}.mlp.down.{kind}", mult.residual_branch)
    if shape.tie_embeddings:
        for kind in ("weight", "bias"):
            scale(f"norm_f.{kind}", mult.output_logits / mult.embedding)
    else:
        scale("lm_head.weight", mult.output_logits)
    return out


def _bias(state: dict, name: str, size: int) -> torch.Tensor:
    return state[name] if name in state else torch.zeros(size)


def llama_tensors(shape: ModelShape, s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF LlamaForCausalLM names for folded mupctl tensors: qkv rows [q; k; v] split into q/k/v_proj,
    MLP rows [gate; up] into gate_proj/up_proj."""
    q, kv, ff = shape.n_heads * shape.d_head, shape.n_kv_heads * shape.d_head, shape.d_ff
    out = {"model.embed_tokens.weight": s["tok_emb.weight"], "model.norm.weight": s["norm_f.weight"]}
    if "lm_head.weight" in s:
        out["lm_head.weight"] = s["lm_head.weight"]
    for i in range(shape.n_layers):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        out[h + "input_layernorm.weight"] = s[b + "attn_norm.weight"]
        out[h + "post_attention_layernorm.weight"] = s[b + "mlp_norm.weight"]
        for kind in ("weight", "bias") if shape.bias else ("weight",):
            wq, wk, wv = s[b + f"attn.qkv.{kind}"].split((q, kv, kv))
            gate, up = s[b + f"mlp.up.{kind}"].split((ff, ff))
            out |= {h + f"self_attn.q_proj.{kind}": wq, h + f"self_attn.k_proj.{kind}": wk,
                    h + f"self_attn.v_proj.{kind}": wv, h + f"self_attn.o_proj.{kind}": s[b + f"attn.proj.{kind}"],
                    h + f"mlp.gate_proj.{kind}": gate, h + f"mlp.up_proj.{kind}": up,
                    h + f"mlp.down_proj.{kind}": s[b + f"mlp.down.{kind}"]}
    return out


def gpt2_tensors(shape: ModelShape, s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT2LMHeadModel names for folded mupctl tensors: its Conv1D weights are (in, out), the
    transpose of a Linear's; absent biases become zeros."""
    d, ff = shape.d_model, shape.d_ff
    out = {"transformer.wte.weight": s["tok_emb.weight"], "transformer.wpe.weight": s["pos_emb.weight"],
           "transformer.ln_f.weight": s["norm_f.weight"], "transformer.ln_f.bias": _bias(s, "norm_f.bias", d)}
    if "lm_head.weight" in s:
        out["lm_head.weight"] = s["lm_head.weight"]
    for i in range(shape.n_layers):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for src, dst, size in (("attn_norm", "ln_1", d), ("mlp_norm", "ln_2", d)):
            out[h + f"{dst}.weight"] = s[b + f"{src}.weight"]
            out[h + f"{dst}.bias"] = _bias(s, b + f"{src}.bias", size)
        for src, dst, size in (("attn.qkv", "attn.c_attn", 3 * d), ("attn.proj", "attn.c_proj", d),
                               ("mlp.up", "mlp.c_fc", ff), ("mlp.down", "mlp.c_proj", d)):
            out[h + f"{dst}.weight"] = s[b + f"{src}.weight"].t()
            out[h + f"{dst}.bias"] = _bias(s, b + f"{src}.bias", size)
    return out


def hf_config(style: str, shape: ModelShape, dtype: str) -> dict:
    """config.json for transformers 4.x and 5.x (checked: 4.57.1, 5.25.0): `rope_theta` and
    `torch_dtype` (4.x) next to `rope_parameters` and `dtype` (5.x). No special-token ids: mupctl adds
    none."""
    common = {"vocab_size": shape.vocab_size, "tie_word_embeddings": shape.tie_embeddings, "use_cache": True,
              "bos_token_id": None, "eos_token_id": None, "pad_token_id": None, "torch_dtype": dtype, "dtype": dtype}
    if style == "llama":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": shape.d_model,
                "intermediate_size": shape.d_ff, "num_hidden_layers": shape.n_layers,
                "num_attention_heads": shape.n_heads, "num_key_value_heads": shape.n_kv_heads,
                "head_dim": shape.d_head, "hidden_act": "silu", "max_position_embeddings": shape.seq_len,
                "rms_norm_eps": shape.norm_eps, "rope_theta": shape.rope_theta, "rope_scaling": None,
                "rope_parameters": {"rope_type": "default", "rope_theta": shape.rope_theta},
                "attention_bias": shape.bias, "mlp_bias": shape.bias, "attention_dropout": 0.0,
                "pretraining_tp": 1, **common}
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": shape.d_model,
            "n_layer": shape.n_layers, "n_head": shape.n_heads, "n_inner": shape.d_ff, "n_positions": shape.seq_len,
            "activation_function": "gelu", "layer_norm_epsilon": shape.norm_eps, "resid_pdrop": 0.0,
            "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, **common}


def check_request(fmt: str, dtype: str, out: Path, force: bool) -> None:
    """The flags, before anything is read: `--format hf`, `--dtype fp32|bf16`, an `--out` that can be a
    directory and is absent or empty unless `--force`."""
    if fmt != "hf":
        raise UserError(f"must be hf (Hugging Face transformers), got {fmt!r}", "--format")
    if dtype not in DTYPES:
        raise UserError(f"must be fp32 or bf16, got {dtype!r}", "--dtype")
    check_dir(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out} exists and is not empty; choose another directory or pass --force to replace it",
                        "--out")


def tokenizer_files(plan: Plan, tmp: Path) -> str | None:
    """Write tokenizer.json + tokenizer_config.json for the run's tokenizer into `tmp`; what was
    exported ("bytes" or the tokenizer.json path), or None with a warning when there is none."""
    from mupctl.data.tokenizer import ByteTokenizer, byte_tokenizer_json, data_tokenizer
    from mupctl.errors import warn
    name = data_tokenizer(plan.data)
    if name == ByteTokenizer.name:
        byte_tokenizer_json().save(str(tmp / "tokenizer.json"))
    elif name and Path(name).is_file():
        shutil.copyfile(name, tmp / "tokenizer.json")
    else:
        why = "synthetic tokens" if plan.data.source == "synthetic" else \
            f"its tokenizer {name} is gone" if name else f"{plan.data.path}/meta.json is unreadable"
        warn([f"no tokenizer files exported ({why}); AutoTokenizer will not load this export"])
        return None
    atomic_write(tmp / "tokenizer_config.json", json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": plan.model.seq_len,
         "clean_up_tokenization_spaces": False}, indent=2) + "\n")
    return name


def write_dir(tmp: Path, out: Path) -> None:
    """Put the finished directory `tmp` at `out` in one rename; an existing `out` (allowed by --force)
    is moved aside first and deleted after."""
    aside = out.with_name(f".{out.name}.replaced")
    if out.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(out, aside)
    os.replace(tmp, out)
    shutil.rmtree(aside, ignore_errors=True)


def export_hf(run_dir: Path, out: Path, step: int | None = None, dtype: str = "fp32", force: bool = False,
              fmt: str = "hf") -> dict:
    """Export a run's checkpoint to `out` (module docstring); returns what was written."""
    from mupctl.weights import load_run, run_plan
    try:
        from safetensors.torch import save_file
        import tokenizers  # noqa: F401 - the tokenizer files
    except ImportError as err:
        raise UserError(f"needs the {err.name} package: pip install 'mupctl[hf]'", "--format") from None
    out = Path(out)
    check_request(fmt, dtype, out, force)
    if Path(run_dir).resolve().is_relative_to(out.resolve()):
        raise UserError(f"{out} holds the run {run_dir}; choose a directory outside it", "--out")
    plan = run_plan(Path(run_dir))
    style = target_style(plan.model)
    run = load_run(Path(run_dir), step, plan)
    folded = fold(plan, run.state)
    tensors = (llama_tensors if style == "llama" else gpt2_tensors)(plan.model, folded)
    torch_dtype, dtype_name = DTYPES[dtype]
    tensors = {k: v.to(torch_dtype).contiguous() for k, v in tensors.items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = hf_config(style, plan.model, dtype_name)
        atomic_write(tmp / "config.json", json.dumps(config, indent=2) + "\n")
        atomic_write(tmp / "generation_config.json", json.dumps(
            {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}, indent=2) + "\n")
        tokenizer = tokenizer_files(plan, tmp)
        summary = {"out": str(out), "architecture": config["architectures"][0], "step": run.step,
                   "checkpoint": str(run.path), "dtype": dtype, "tied": plan.model.tie_embeddings,
                   "tokenizer": tokenizer, "plan_hash": plan.hash, "multipliers": plan.multipliers.model_dump()}
        atomic_write(tmp / "mupctl_export.json", json.dumps(summary, indent=2) + "\n")
        write_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
