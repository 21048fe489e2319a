"""The documented contract matches the code, item by item: README/CI commands, every recipe key with
its default, every command with every flag, every plan field."""

import re

from pydantic import BaseModel
from typer.main import get_command

from conftest import ROOT
from mupctl.cli import app
from mupctl.plan import Plan
from mupctl.recipe.schema import Recipe


def recipe_keys(cls, prefix=""):
    """(dotted key, default) of every leaf field of the recipe schema."""
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from recipe_keys(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name, field.default


def table_rows(doc: str) -> dict[str, str]:
    """First cell (a backticked name) → the rest of the row, for every markdown table row."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)` \|(.*)$", doc, re.M)}


def commands(group, prefix=""):
    """(path, click command) of every leaf command, e.g. ("data prepare", …)."""
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer's own click copy: no isinstance against click's)
            yield from commands(cmd, f"{prefix}{name} ")
        else:
            yield prefix + name, cmd


def test_readme_opens_with_two_setup_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(block) == 2 and block[0].endswith("mupctl train") and "pytest" in block[1]
    assert "--durations=15" in block[1]  # CI prints the slowest tests
    assert text.index("```bash") < 20  # the very top of the README
    assert block[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_recipe_key_is_documented_with_its_default():
    rows = table_rows((ROOT / "docs" / "recipe.md").read_text())
    for key, default in recipe_keys(Recipe):
        assert key in rows, f"docs/recipe.md has no row for {key}"
        assert rows[key].strip().startswith(f"`{default!r}` |"), f"{key}: the documented default is not {default!r}"


def test_every_command_and_flag_is_documented():
    rows = table_rows((ROOT / "docs" / "cli.md").read_text())  # first cell: the command and its arguments
    found = list(commands(get_command(app)))
    assert {path for path, _ in found} >= {"plan", "train", "resume", "data prepare"}
    for path, cmd in found:
        row = next((rest for name, rest in rows.items() if name == path or name.startswith(path + " ")), None)
        assert row is not None, f"docs/cli.md has no row for `{path}`"
        for param in cmd.params:
            for flag in [o for o in param.opts if o.startswith("--") and o != "--help"]:
                assert f"`{flag}" in row, f"docs/cli.md's `{path}` row does not name {flag}"


def test_every_plan_field_is_documented():
    rows = table_rows((ROOT / "docs" / "plan-json.md").read_text())
    missing = [name for name in Plan.model_fields if name not in rows]
    assert not missing, f"docs/plan-json.md has no row for {missing}"
    assert "command" in rows  # shown by `plan --json`, not part of the plan
