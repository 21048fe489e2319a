"""Pre-tokenize text files into nanoGPT-style shards (`mupctl data prepare`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from mupctl.data.tokenizer import load_tokenizer
from mupctl.errors import UserError
from mupctl.paths import atomic_open, atomic_write, check_dir


DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}  # meta.json "dtype" -> on-disk dtype


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32; little-endian either way."""
    return DTYPES["uint16" if vocab_size <= 65536 else "uint32"]


def prepare(inputs: list[str | Path], out_dir: str | Path, tokenizer: str | None = None,
            val_fraction: float = 0.05) -> dict:
    """Tokenize `inputs` into `out_dir/{train.bin,val.bin,meta.json}` and return the meta dict.

    Inputs are UTF-8 text files or directories (every `*.txt` below them, sorted by path).
    Each file is tokenized on its own; its last `floor(n * val_fraction)` tokens go to val.bin,
    the rest to train.bin, in input order. The .bin files are flat arrays of token ids, raw
    little-endian, no header: uint16 if vocab_size <= 65536 else uint32. meta.json holds
    {"dtype", "vocab_size", "tokenizer", "train_tokens", "val_tokens", "sources"}. Every file is
    written to a temporary name and renamed into place, meta.json last.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"must be between 0 and 1 (exclusive), got {val_fraction}", "--val-fraction")
    out = check_dir(Path(out_dir), "--out")
    files = _text_files(inputs)
    tok = load_tokenizer(tokenizer)
    dtype = token_dtype(tok.vocab_size)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        counts = _write_splits(files, tok, dtype, val_fraction, out)
    except BaseException:
        if created:  # leave nothing behind: the shards' temp files are gone, so this is empty
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    meta = {"dtype": dtype.name, "vocab_size": tok.vocab_size, "tokenizer": tok.name,
            "train_tokens": counts["train"], "val_tokens": counts["val"], "sources": [str(f) for f in files]}
    atomic_write(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


def _write_splits(files: list[Path], tok, dtype: np.dtype, val_fraction: float, out: Path) -> dict:
    """Tokenize each file into out/train.bin and out/val.bin (each file's tail to val); the counts."""
    counts = {"train": 0, "val": 0}
    with atomic_open(out / "train.bin", "wb") as train, atomic_open(out / "val.bin", "wb") as val:
        for f in files:
            ids = tok.encode(_read(f)).astype(dtype)
            cut = len(ids) - int(len(ids) * val_fraction)
            train.write(ids[:cut].tobytes())
            val.write(ids[cut:].tobytes())
            counts["train"] += cut
            counts["val"] += len(ids) - cut
        if counts["train"] == 0:
            raise UserError("no text to tokenize (every input file is empty)", "INPUT")
        if counts["val"] == 0:
            raise UserError(f"{val_fraction} of {counts['train']} tokens leaves no validation tokens; "
                            "raise it or add text", "--val-fraction")
    return counts


def _text_files(inputs: list[str | Path]) -> list[Path]:
    if not inputs:
        raise UserError("no input files given", "INPUT")
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(item.rglob("*.txt"))
            if not found:
                raise UserError(f"no .txt files under directory {item}", "INPUT")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"no such file or directory: {item}", "INPUT")
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})", "INPUT") from None
