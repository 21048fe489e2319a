"""Run directories made in this process for tests/test_export.py and tests/test_eval.py: a plan
compiled from a raw recipe, the model built from it with random (not init) values everywhere, and
checkpoints written by the project's own `Checkpointer` (no torchrun)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from mupctl.checkpoint import Checkpointer
from mupctl.model import GPT
from mupctl.plan import compile_plan, write_plan
from mupctl.recipe import load_recipe

STYLES = {"llama": {"activation": "swiglu", "norm": "rmsnorm", "position": "rope", "n_kv_heads": 2,
                    "rope_theta": 500.0, "norm_eps": 1e-6},
          "gpt2": {"activation": "gelu", "norm": "layernorm", "position": "learned", "bias": True,
                   "norm_eps": 1e-5}}


def make_plan(recipe: str = "mup", style: str = "llama", tied: bool = False, data: dict | None = None, **model):
    """A 2-layer, 64-wide plan whose multipliers are all != 1 where the recipe has them: α_in 2.5,
    α_out 3 (1.5 = 3/m under mup, m = 2), attention scale 2/16 (not 1/√16), depth_mup's branch 1/2."""
    scaling = {"recipe": recipe, "alpha_in": 2.5, "alpha_out": 3.0, "alpha_attn": 2.0}
    if recipe != "none":
        scaling["base"] = {"d_model": 32, "d_head": 8, "n_layers": 1 if recipe == "depth_mup" else 2}
    raw = {"model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 256, "seq_len": 32,
                     "tie_embeddings": tied, **STYLES[style], **model},
           "scaling": scaling, "data": data or {"source": "embedded"}}
    return compile_plan(load_recipe(raw=raw))


@torch.no_grad()
def random_model(plan, seed: int = 0) -> GPT:
    """The plan's model with every tensor random: matrices N(0, 1/fan_in), embeddings N(0, 0.1²), norm
    gains 1 + N(0, 0.2²), biases N(0, 0.1²), so no fold can hide behind a zero or a one."""
    torch.manual_seed(seed)
    model = GPT(plan, device="cpu")
    for name, p in model.named_parameters():
        if p.ndim == 2:
            p.normal_(0, 0.1 if "emb" in name else 1 / math.sqrt(p.shape[1]))
        elif name.endswith("norm.weight") or name == "norm_f.weight":
            p.normal_(1.0, 0.2)
        else:
            p.normal_(0, 0.1)
    return model.eval()


def save_run(run_dir: Path, plan, model, steps=(1,)) -> Path:
    """A run directory with plan.json and a checkpoint of `model` at each of `steps`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_plan(run_dir / "plan.json", plan)
    ckpt = Checkpointer(run_dir / "checkpoints", keep_last=len(steps))
    for step in steps:
        ckpt.save(step, model, [], {"plan_hash": plan.hash})
    return run_dir
