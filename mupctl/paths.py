"""Output paths: checks made before anything is computed or written (bad paths exit 2), and the one
atomic write every module uses."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

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


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", durable: bool = False) -> Iterator[IO]:
    """A file to write whose content replaces `path` in one step when the block succeeds: it goes to
    the sibling `path.tmp`, which is then renamed over `path` (`os.replace`, atomic on POSIX), so a
    reader, or a crash at any moment, sees the old file or the new one, never a part. A block that
    raises leaves `path` as it was and no `.tmp` behind. `durable`: fsync the file before the rename
    and the directory after it (the new content survives a power loss)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes, durable: bool = False) -> None:
    """Replace `path` with `data` (text or bytes) through `atomic_open`."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", durable) as f:
        f.write(data)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
