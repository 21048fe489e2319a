"""Starter recipes: `mupctl init NAME --template T` copies `templates/T.yaml` with the name filled in."""

from __future__ import annotations

from pathlib import Path

from mupctl.errors import UserError
from mupctl.paths import check_file

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
TEMPLATES = ("tiny", "none", "mup", "depth_mup", "muon")


def write_template(name: str, template: str, out: Path | None = None, force: bool = False) -> Path:
    """Validate the filled-in template, then write it (never over an existing file unless forced)."""
    import yaml

    from mupctl.plan import build_plan
    from mupctl.recipe import load_recipe

    if template not in TEMPLATES:
        raise UserError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}", "--template")
    src = TEMPLATE_DIR / f"{template}.yaml"
    if not src.is_file():
        raise UserError(f"template file {src} is missing; install mupctl from its repository "
                        "(pip install -e .)", "--template")
    load_recipe(raw={"name": name})  # the schema's name rule, before the name goes into YAML text
    text = src.read_text().replace("name: __NAME__", f"name: {name}")
    build_plan(load_recipe(raw=yaml.safe_load(text)))
    path = check_file(out or Path(f"{name}.yaml"), "--out")
    if path.exists() and not force:
        raise UserError(f"{path} exists; pass --force to overwrite or choose another --out", "--out")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
