"""What the diagnostics reports share: strict JSON files and the recipe label of their titles."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mupctl.paths import atomic_write


def recipe_label(report: dict) -> str:
    """"depth_mup, α = 0.5" for titles: the scaling recipe, and CompleteP's α under depth_mup."""
    alpha = report.get("depth_alpha")  # absent in reports written before it existed
    return report["scaling_recipe"] + ("" if alpha is None else f", α = {alpha:g}")


def finite_json(obj):
    """A copy with non-finite floats as None: strict JSON (NaN/Infinity are not JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """`obj` as strict, indented JSON in `path` (atomically)."""
    atomic_write(path, json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n")
