"""YAML → validated `Recipe`: read, apply `--set` overrides, translate legacy keys, validate.

Order (each step sees the previous one's output):
1. read the YAML mapping (or `{}` for the embedded default);
2. apply `--set a.b=c` overrides (values parsed as YAML, so `--set train.compile=false` is a bool);
3. the legacy shim (`use_mup`, Megatron-style `mup_*` keys, `--use-mup`) rewrites to `scaling.*`
   with a deprecation notice on stderr — the only place legacy input is understood;
4. pydantic validation, then the cross-field checks of `mupctl.recipe.checks`.
Any failure raises `UserError` with the dotted field path; nothing is written.
"""

from __future__ import annotations

import copy
import difflib
import sys
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from mupctl.errors import UserError
from mupctl.recipe.checks import check_recipe
from mupctl.recipe.schema import Recipe

# Megatron-style legacy keys → new dotted path (values pass through; the compiler resolves them).
LEGACY_KEYS = {
    "mup_base_hidden_size": "scaling.base.d_model",
    "mup_width_mult": "scaling.width_mult",
    "mup_base_num_layers": "scaling.base.n_layers",
    "mup_base_head_dim": "scaling.base.d_head",
    "mup_input_alpha": "scaling.alpha_in",
    "mup_output_alpha": "scaling.alpha_out",
    "mup_attn_alpha": "scaling.alpha_attn",
    "mup_readout_zero_init": "scaling.readout_zero_init",
}


def legacy_schema() -> dict:
    """JSON Schema properties of the deprecated keys `apply_legacy` still reads, so that `mupctl schema`
    accepts what the loader accepts."""
    out = {"use_mup": {"type": "boolean", "deprecated": True,
                       "description": "deprecated: write scaling.recipe: mup (true) or none (false)"}}
    return out | {k: {"deprecated": True, "description": f"deprecated: write {v}"} for k, v in LEGACY_KEYS.items()}


def deprecation(message: str) -> None:
    """A legacy input was translated: say so on stderr (stdout stays clean for --json)."""
    print(f"DeprecationWarning: {message}", file=sys.stderr)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that rejects a key given twice in one mapping (PyYAML would keep the last). Keys
    pulled in by a merge key (`<<: *defaults`) may be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                raise yaml.constructor.ConstructorError(None, None, f"a key must be a name, got {key!r}",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _no_binary(loader, node):
    raise yaml.constructor.ConstructorError(None, None, "binary values (!!binary) have no place in a recipe",
                                            node.start_mark)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:binary", _no_binary)


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        found = p.is_file()
    except OSError as exc:  # e.g. a name too long
        raise UserError(f"{exc.strerror or exc}; give a path to a YAML recipe", str(p)) from None
    if not found:
        what = "is a directory" if p.is_dir() else "is not a regular file" if p.exists() else "no such recipe file"
        raise UserError(f"{what} (give a path to a YAML recipe, or see `mupctl init`)", str(p))
    try:
        data = yaml.load(p.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}); save the recipe as UTF-8", str(p)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "could not parse"
        raise UserError(f"invalid YAML{where}: {problem}", str(p)) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise UserError(f"invalid value: {exc}", str(p)) from None
    except RecursionError:
        raise UserError("nested too deeply to be a recipe", str(p)) from None
    if data is None:  # an empty or comment-only file is more likely truncated than meant as "all defaults"
        raise UserError("the recipe is empty; write at least one section (see `mupctl init`), or run "
                        "`mupctl train` without a file for the embedded default", str(p))
    if not isinstance(data, dict):
        raise UserError(f"a recipe must be a YAML mapping of sections, got {type(data).__name__}", str(p))
    return data


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Apply `a.b=c` overrides; `c` is parsed as YAML (`1e-3` → float, `false` → bool)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"expected KEY=VALUE with a dotted KEY such as optimizer.lr=1e-3, got {item!r}", "--set")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise UserError(f"invalid value for {key}: {exc}", "--set") from None
        except RecursionError:
            raise UserError(f"the value for {key} is nested too deeply", "--set") from None
        set_dotted(out, key, parsed, "--set")
    return out


def get_dotted(raw: dict, dotted: str, default=None):
    """raw["a"]["b"] for "a.b", or `default` when any part is missing or not a mapping."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_dotted(raw: dict, dotted: str, value, field: str) -> None:
    """raw["a"]["b"] = value for "a.b", creating missing (or null) sections; a part that holds a value,
    not a section, is an error naming `field` (what the user wrote: `--set`, a legacy key)."""
    node = raw
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"cannot set {dotted}: {'.'.join(parts[:i + 1])} is {child!r}, not a section", field)
        node = child
    node[parts[-1]] = value


def apply_legacy(raw: dict, use_mup_flag: bool = False) -> dict:
    """Translate `use_mup` / `mup_*` keys and the `--use-mup` flag to `scaling.*` (with notices)."""
    out = copy.deepcopy(raw)
    explicit = get_dotted(out, "scaling.recipe")
    legacy = {k: out.pop(k) for k in list(out) if k == "use_mup" or k in LEGACY_KEYS}
    if (legacy or use_mup_flag) and not isinstance(out.get("scaling", {}), dict):
        raise UserError(f"must be a mapping of scaling keys, got {out['scaling']!r}", "scaling")
    if legacy:
        use_mup = legacy.pop("use_mup", None)
        if use_mup is None:
            first = sorted(legacy)[0]
            raise UserError("legacy muP keys need `use_mup: true` (better: write scaling.recipe: mup "
                            "and scaling.base.*)", first)
        if not isinstance(use_mup, bool):
            raise UserError(f"must be true or false, got {use_mup!r}", "use_mup")
        target = "mup" if use_mup else "none"
        if explicit is not None and (explicit == "none") == use_mup:
            raise UserError(f"conflicts with scaling.recipe: {explicit}; remove use_mup "
                            "(it is deprecated) and keep scaling.recipe", "use_mup")
        if explicit is None:
            deprecation(f"`use_mup: {str(use_mup).lower()}` is deprecated; write `scaling.recipe: {target}` "
                        "(mapped for you)")
            set_dotted(out, "scaling.recipe", target, "use_mup")
        else:
            deprecation(f"`use_mup: {str(use_mup).lower()}` is deprecated and ignored: the recipe already says "
                        f"scaling.recipe: {explicit}; remove use_mup")
        for key, value in legacy.items():
            current = get_dotted(out, LEGACY_KEYS[key])
            if current is not None and current != value:
                raise UserError(f"conflicts with {LEGACY_KEYS[key]}: {current!r} (got {value!r}); remove {key} "
                                "(it is deprecated)", key)
            set_dotted(out, LEGACY_KEYS[key], value, key)
            deprecation(f"`{key}` is deprecated; write `{LEGACY_KEYS[key]}`")
    if use_mup_flag:
        current = get_dotted(out, "scaling.recipe")
        if current == "none":
            raise UserError("conflicts with `scaling.recipe: none` in the recipe; drop the flag "
                            "or set scaling.recipe to mup", "--use-mup")
        if current in (None, "mup"):
            set_dotted(out, "scaling.recipe", "mup", "--use-mup")
            deprecation("--use-mup is deprecated; write `scaling.recipe: mup` in the recipe")
        else:
            deprecation(f"--use-mup is deprecated and ignored: the recipe already says scaling.recipe: {current}")
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    cls: Any = Recipe
    for part in loc:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        cls = cls.model_fields[part].annotation
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


_PHRASES = [("Input should be ", "must be "), ("greater than or equal to ", ">= "), ("greater than ", "> "),
            ("less than or equal to ", "<= "), ("less than ", "< "), ("Value error, ", ""),
            ("String should have ", "must have ")]


def format_validation_error(err: ValidationError) -> UserError:
    """First pydantic error → one-line `UserError`: dotted path, what is allowed, the bad value."""
    e = err.errors()[0]
    loc = tuple(e["loc"])
    path = ".".join(str(p) for p in loc) or "recipe"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    if e["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        names = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(names)}"
        return UserError(f"unknown key; {hint}{suffix}", path)
    msg = e["msg"]
    for old, new in _PHRASES:
        msg = msg.replace(old, new)
    value = e.get("input")
    shown = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    shown = shown.removesuffix("\n...").removesuffix(" ...")
    return UserError(f"{msg}, got {shown}{suffix}", path)


def validate(raw: dict) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        raise format_validation_error(err) from None
    check_recipe(recipe)
    return recipe


def load_recipe(path: str | Path | None = None, overrides: Iterable[str] = (), use_mup: bool = False,
                raw: dict | None = None) -> Recipe:
    """Read, override, translate legacy keys and validate a recipe (`path=None`: the embedded default)."""
    data = raw if raw is not None else (read_yaml(path) if path is not None else {})
    data = apply_overrides(data, overrides)
    data = apply_legacy(data, use_mup_flag=use_mup)
    return validate(data)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe (every default spelled out), loadable by `load_recipe`."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
