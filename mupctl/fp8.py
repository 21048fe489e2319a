"""FP8 training of the hidden matmuls through torchao's float8 (`train.precision: fp8`).

    model = GPT(plan, device="cuda")
    apply_fp8(model)              # before torch.compile, FSDP wrapping and build_optimizer
    model.compile()               # float8 casts are only fast compiled
    with torch.autocast("cuda", dtype=torch.bfloat16): ...

`apply_fp8` swaps every `Linear` inside the transformer blocks (fused qkv, attention out, MLP up and
down) for torchao's `Float8Linear` with dynamic scaling: e4m3 for inputs and weights, e5m2 for
gradients, one scale per tensor ("tensorwise", the default) or per row ("rowwise"). The token
embedding, the LM head (tied or not) and the norms are left alone. The parameters stay the same
objects (fp32 master weights, same names, shapes and roles), so the plan, the optimizer groups,
checkpoints and the μP multipliers are unchanged: only the arithmetic of those matmuls changes.

torchao is optional (not a dependency): it needs a CUDA GPU with fp8 tensor cores (H100 and newer)
unless `emulate=True` (a slow reference mode that also runs on the CPU, for tests).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch


def apply_fp8(model: torch.nn.Module, recipe: str = "tensorwise", emulate: bool = False) -> int:
    """Convert the hidden `Linear`s of a `mupctl.model.GPT` to float8 training in place; returns
    how many were converted. Raises ImportError when torchao is not installed."""
    from torchao.float8 import Float8LinearConfig
    from torchao.float8.float8_linear import Float8Linear

    from mupctl.model import Linear

    config = Float8LinearConfig.from_recipe_name(recipe)
    if emulate:
        config = dataclasses.replace(config, emulate=True)
    converted = 0
    for parent in model.blocks.modules():
        for name, child in list(parent.named_children()):
            if not isinstance(child, Linear):
                continue
            d_out, d_in = child.weight.shape
            if d_in % 16 or d_out % 16:  # fp8 GEMMs need multiples of 16
                continue
            new = Float8Linear.from_float(
                SimpleNamespace(in_features=d_in, out_features=d_out, weight=child.weight, bias=child.bias),
                config=config)
            new.roles = child.roles
            setattr(parent, name, new)
            converted += 1
    return converted
