"""Starter recipes: `mupctl init NAME --template T` copies `T.yaml` of this package with the name
filled in. The YAML files are package data, so `init` works from an installed wheel. The default is
`tiny` (0.6M parameters, 200 steps: about a minute on a laptop CPU), so that the first
`mupctl train NAME.yaml` finishes; the others are 34M-135M-parameter GPU starting points."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mupctl.errors import UserError
from mupctl.paths import atomic_write, check_file

TEMPLATES = ("tiny", "none", "mup", "depth_mup", "muon")


def template_text(template: str) -> str:
    """The text of template `template` (a `UserError` naming --template for an unknown one)."""
    if template not in TEMPLATES:
        raise UserError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}", "--template")
    return (resources.files(__name__) / f"{template}.yaml").read_text()


def write_template(name: str, template: str, out: Path | None = None, force: bool = False):
    """Validate the filled-in template, then write it to `out`, default NAME.yaml (never over an existing
    file unless forced); a NAME that ends in .yaml or .yml is the file, its stem the recipe's name.
    Returns (the path, the recipe's `Plan`)."""
    import yaml

    if name.endswith((".yaml", ".yml")) and out is None:
        out, name = Path(name), name.rsplit(".", 1)[0]

    from mupctl.plan import compile_plan
    from mupctl.recipe import load_recipe

    text = template_text(template)
    load_recipe(raw={"name": name})  # the schema's name rule, before the name goes into YAML text
    text = text.replace("name: __NAME__", f"name: {name}")
    plan = compile_plan(load_recipe(raw=yaml.safe_load(text)))
    path = check_file(out or Path(f"{name}.yaml"), "--out")
    if path.exists() and not force:
        raise UserError(f"{path} exists; pass --force to overwrite or choose another --out", "--out")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path, plan
