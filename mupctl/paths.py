"""Checks on output paths, made before anything is computed or written (bad paths exit 2)."""

from __future__ import annotations

from pathlib import Path

from mupctl.errors import UserError


def check_dir(path: Path, field: str) -> Path:
    """`path` is a directory or can be created as one: it is not empty, and neither it nor any
    existing ancestor is a file. Creates nothing."""
    if not str(path).strip():
        raise UserError("is empty; give a directory path", field)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{p} is a file, not a directory; choose another path", field)
            break
    return path


def check_file(path: Path, field: str) -> Path:
    """`path` can be written as a file: not a directory, and its parent can be a directory."""
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file path", field)
    check_dir(path.parent, field)
    return path
