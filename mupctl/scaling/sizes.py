"""How a recipe grows with width and depth: the `--set` overrides that give it another size.

Width w: `model.d_model = w`, `model.n_heads = w / d_head` (the recipe's head size kept); an
explicit `model.d_ff` or `model.n_kv_heads` grows in proportion. Depth L: `model.n_layers = L`.
`scaling.base` is pinned to the recipe's resolved base shape, so m = w / base.d_model and
λ = L / base.n_layers (an unset base field would otherwise follow each size and give m = λ = 1).
Pure Python, like the rest of `mupctl.scaling`.
"""

from __future__ import annotations

from mupctl.errors import UserError
from mupctl.recipe import load_recipe
from mupctl.scaling.compiler import resolved_base

AXIS_FLAG = {"width": "--widths", "depth": "--depths"}


def base_overrides(base: dict) -> list[str]:
    """Overrides that write a base shape (d_model, n_layers, d_head) explicitly, replacing any
    `scaling.width_mult` (the base width would otherwise be given twice)."""
    return [f"scaling.base.{k}={v}" for k, v in base.items()] + ["scaling.width_mult=null"]


def pinned_base(recipe) -> list[str]:
    """`base_overrides` of the recipe's resolved base shape."""
    return base_overrides(resolved_base(recipe))


def size_overrides(recipe, axis: str, size: int, field: str | None = None) -> list[str]:
    """The overrides that give `recipe` the size `size` on `axis` (module docstring); a width that
    does not keep the head size whole is a `UserError` naming `field` (default the axis flag)."""
    if axis == "depth":
        return [f"model.n_layers={size}"]
    model = recipe.model
    d_head = model.d_model // model.n_heads
    heads = size // d_head
    kv, ff = model.n_kv_heads, model.d_ff
    if size % d_head or (kv and heads * kv % model.n_heads) or (ff and ff * size % model.d_model):
        raise UserError(f"width {size} must be a multiple of the head size {d_head} (and keep the recipe's "
                        "n_kv_heads and d_ff ratios whole)", field or AXIS_FLAG[axis])
    out = [f"model.d_model={size}", f"model.n_heads={heads}"]
    if kv:
        out.append(f"model.n_kv_heads={heads * kv // model.n_heads}")
    if ff:
        out.append(f"model.d_ff={ff * size // model.d_model}")
    return out


def sized_overrides(recipe_path, overrides: list[str], axis: str, sizes: list[int]) -> dict[int, list[str]]:
    """size → the full override list for that size (user overrides, pinned base, size)."""
    recipe = load_recipe(recipe_path, overrides)
    common = list(overrides) + pinned_base(recipe)
    return {s: common + size_overrides(recipe, axis, s) for s in sizes}
