"""Checks on output paths, made before anything is computed or written (bad paths exit 2)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mupctl.errors import UserError


def given_path(value: str | None, field: str) -> Path | None:
    """A path typed on the command line (None stays None). An empty one is a `UserError`: pathlib
    would read it as the current directory."""
    if value is not None and not value.strip():
        raise UserError("is empty; give a path", field)
    return None if value is None else Path(value)


def given_file(value: str | None, field: str) -> Path | None:
    """`given_path` for a file to write: a trailing "/" (which pathlib drops) names a directory."""
    if value is not None and value.endswith(("/", os.sep)):
        raise UserError(f"{value} names a directory; give a file path such as {value}recipe.yaml", field)
    return given_path(value, field)


def check_dir(path: Path, field: str) -> Path:
    """`path` is a directory or can be created as one: it is not empty, neither it nor any existing
    ancestor is a file, the nearest existing one is `writable`, and the OS accepts the name (length,
    characters). Creates nothing."""
    if not str(path).strip():
        raise UserError("is empty; give a directory path", field)
    try:
        for p in (path, *path.parents):
            dangling(p, field)
            if p.exists():
                if not p.is_dir():
                    raise UserError(f"{p} is a file, not a directory; choose another path", field)
                writable(p, field)
                break
    except OSError as err:  # e.g. ENAMETOOLONG
        raise UserError(f"{path}: {err.strerror or err}; choose another path", field) from None
    return path


def writable(directory: Path, field: str) -> None:
    """Creating a file in `directory` works (probed with an unnamed temporary file, which leaves
    nothing behind), else a `UserError`: permissions, a read-only mount, /proc or /sys."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise UserError(f"{directory} is not writable ({err.strerror or err}); choose another path", field) from None


def dangling(path: Path, field: str) -> None:
    """A symbolic link whose target does not exist is a `UserError` (writing through it fails)."""
    if path.is_symlink() and not path.exists():
        raise UserError(f"{path} is a symbolic link to a missing {os.readlink(path)}; choose another path", field)


def check_file(path: Path, field: str) -> Path:
    """`path` can be written as a file: not a directory, and its parent can be a directory."""
    try:
        dangling(path, field)
        if path.is_dir():
            raise UserError(f"{path} is a directory; give a file path", field)
    except OSError as err:  # e.g. ENAMETOOLONG
        raise UserError(f"{path}: {err.strerror or err}; choose another path", field) from None
    check_dir(path.parent, field)
    return path
