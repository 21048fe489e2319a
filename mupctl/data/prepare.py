"""Pre-tokenize text into nanoGPT-style shards (`mupctl data prepare`).

Inputs (`mupctl.data.formats`): UTF-8 text files (each one document), `.jsonl` / `.jsonl.gz` (the
`text_field` of every record) and `.parquet` (the `text_field` column), or directories of them. The
reader cuts them into ~1 MiB pieces; `workers` processes tokenize the pieces (`OrderedPool`: at most
2·workers pieces in flight, results in input order), and the parent appends the ids to the shards, so
memory stays bounded whatever the corpus size and the shards are byte-identical for any `workers`.
Every record of a JSONL/Parquet file is followed by the ids of `separator` (default a blank line).

Split: the last ⌊n·val_fraction⌋ tokens of each file (n = its token count) go to val.bin, the rest to
train.bin, in input order. While a file streams in, its tokens go to train.bin; when it ends, its tail
is moved to val.bin (copied in blocks, then train.bin is truncated).

Atomicity: the shards are written as `train.bin.tmp` / `val.bin.tmp`. Only when every token is
written (and fsynced) is an old `meta.json` removed, the shards renamed into place, and the new
`meta.json` written last: a kill at any moment leaves either the old dataset, or shards without a
`meta.json` (refused by `train`), or the new dataset, never a mix that `train` would accept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from mupctl.data import formats
from mupctl.data.formats import InputError, Piece, documents, input_files, read_pieces
from mupctl.data.parallel import OrderedPool
from mupctl.data.progress import Progress
from mupctl.data.tokenizer import load_tokenizer
from mupctl.errors import UserError
from mupctl.paths import atomic_open, atomic_write, check_dir

DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}  # meta.json "dtype" -> on-disk dtype
OUTPUTS = ("meta.json", "train.bin", "val.bin")
COPY_BLOCK = 8 << 20


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32; little-endian either way."""
    return DTYPES["uint16" if vocab_size <= 65536 else "uint32"]


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(tokenizer: str | None) -> int:
    """1 for the byte tokenizer (handing a piece to another process costs more than its tokenization:
    one process is 2–2.6× faster, docs/data.md), else `cpus()`."""
    return 1 if tokenizer is None else cpus()


def prepare(inputs: list[str | Path], out_dir: str | Path, tokenizer: str | None = None,
            val_fraction: float = 0.05, text_field: str = "text", workers: int | None = None,
            separator: str = "\n\n", force: bool = False, progress_stream=None) -> dict:
    """Tokenize `inputs` into `out_dir/{train.bin,val.bin,meta.json}` (module docstring) and return the
    meta dict: {"dtype", "vocab_size", "tokenizer", "train_tokens", "val_tokens", "sources"}. The .bin
    files are flat arrays of token ids, raw little-endian, no header: uint16 if vocab_size <= 65536
    else uint32."""
    if not 0 < val_fraction < 1:
        raise UserError(f"must be between 0 and 1 (exclusive), got {val_fraction}", "--val-fraction")
    if workers is not None and workers < 1:
        raise UserError(f"must be >= 1, got {workers}", "--workers")
    if not text_field:
        raise UserError("is empty; give the JSON field or Parquet column that holds the text", "--text-field")
    out = check_dir(Path(out_dir), "--out")
    files = input_files(inputs, text_field)
    tok = load_tokenizer(tokenizer)
    held = [name for name in OUTPUTS if (out / name).exists()]
    if held and not force:
        raise UserError(f"{out} already holds a dataset ({', '.join(held)}); pass --force to replace it", "--out")
    total = sum(f.stat().st_size for f in files)
    workers = min(workers or default_workers(tokenizer), max(1, -(-total // formats.PIECE_BYTES)))  # ≤ pieces
    dtype = token_dtype(tok.vocab_size)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        counts = _write_shards(files, out, (tokenizer, dtype.str, separator, text_field), val_fraction, workers,
                               Progress(total, progress_stream))
    except BaseException:
        if created:  # the shards' temp files are gone: leave no directory behind either
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    meta = {"dtype": dtype.name, "vocab_size": tok.vocab_size, "tokenizer": tok.name,
            "train_tokens": counts["train"], "val_tokens": counts["val"], "sources": [str(f) for f in files]}
    atomic_write(out / "meta.json", json.dumps(meta, indent=2) + "\n", durable=True)
    return meta


def _write_shards(files: list[Path], out: Path, setup: tuple, val_fraction: float, workers: int,
                  progress: Progress) -> dict:
    """Tokenize every file into out/train.bin and out/val.bin (renamed into place at the end, after an
    old meta.json is removed); the token counts."""
    pieces = (p for i, f in enumerate(files) for p in read_pieces(f, i, setup[3]))
    with atomic_open(out / "train.bin", "w+b", durable=True) as train, \
            atomic_open(out / "val.bin", "wb", durable=True) as val, \
            OrderedPool(workers, _init_worker, setup) as pool, progress:
        shards = Shards(train, val, val_fraction)
        for file, size, ids in pool.imap(_encode, pieces):
            if isinstance(ids, InputError):
                raise UserError(ids.message, ids.field)
            shards.add(file, ids)
            progress.advance(size, len(ids))
        shards.end_file()
        if shards.counts["train"] == 0:
            raise UserError("no text to tokenize (every input is empty)", "INPUT")
        if shards.counts["val"] == 0:
            raise UserError(f"{val_fraction} of {shards.counts['train']} tokens leaves no validation tokens; "
                            "raise it or add text", "--val-fraction")
        (out / "meta.json").unlink(missing_ok=True)  # from here until the new one, train refuses the directory
    return shards.counts


class Shards:
    """Appends each file's ids to train.bin, then moves the file's last ⌊n·val_fraction⌋ to val.bin."""

    def __init__(self, train, val, val_fraction: float):
        self.train, self.val, self.val_fraction = train, val, val_fraction
        self.file, self.file_tokens, self.itemsize = None, 0, None
        self.counts = {"train": 0, "val": 0}

    def add(self, file: int, ids: np.ndarray) -> None:
        if file != self.file:
            self.end_file()
            self.file = file
        self.itemsize = ids.itemsize
        self.train.write(ids.tobytes())
        self.file_tokens += len(ids)

    def end_file(self) -> None:
        n, self.file_tokens = self.file_tokens, 0
        k = int(n * self.val_fraction)
        self.counts["train"] += n - k
        self.counts["val"] += k
        if k:
            cut = self.counts["train"] * self.itemsize
            self.train.seek(cut)
            shutil.copyfileobj(self.train, self.val, COPY_BLOCK)
            self.train.truncate(cut)
            self.train.seek(cut)


_worker: dict = {}


def _init_worker(tokenizer: str | None, dtype: str, separator: str, text_field: str) -> None:
    """Per process: the tokenizer, the output dtype, the separator's ids."""
    tok = load_tokenizer(tokenizer)
    _worker.update(tok=tok, dtype=np.dtype(dtype), text_field=text_field,
                   sep=tok.encode(separator) if separator else np.empty(0, np.int64))


def _encode(piece: Piece) -> tuple[int, int, np.ndarray | InputError]:
    """(file, input bytes, ids in the shard dtype) of a piece; an `InputError` in place of the ids."""
    tok, sep, dtype = _worker["tok"], _worker["sep"], _worker["dtype"]
    parts = []
    try:
        for text in documents(piece, _worker["text_field"]):
            if text:
                parts.append(tok.encode(text))
                if piece.kind != "text":
                    parts.append(sep)
    except InputError as err:
        return piece.file, piece.size, err
    ids = np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)
    return piece.file, piece.size, ids
