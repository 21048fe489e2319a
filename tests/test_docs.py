"""The documented contract matches the code: README/CI commands, recipe keys, CLI commands."""

import re

from pydantic import BaseModel

from conftest import ROOT
from mupctl.cli import app
from mupctl.recipe.schema import Recipe


def dotted_keys(cls, prefix=""):
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from dotted_keys(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_readme_opens_with_two_setup_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(block) == 2 and block[0].endswith("mupctl train") and "pytest" in block[1]
    assert text.index("```bash") < 20  # the very top of the README
    assert block[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_recipe_key_is_documented():
    doc = (ROOT / "docs" / "recipe.md").read_text()
    missing = [k for k in dotted_keys(Recipe) if f"`{k}`" not in doc]
    assert not missing, missing


def test_every_command_is_documented():
    doc = (ROOT / "docs" / "cli.md").read_text()
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert len(names) >= 9
    missing = [n for n in names if f"`{n}" not in doc]
    assert not missing, missing
