"""Token sources and the deterministic sampling rule.

Rule: sequence j of `split` at `step` is drawn from `np.random.default_rng([seed, split_id, step, j])`
(split_id 0 = train, 1 = val). For "embedded" and "bin" it draws one offset o uniform in
[0, n - seq_len - 1] and takes tokens[o : o + seq_len + 1]; for "synthetic" it draws seq_len + 1
tokens uniform in [0, vocab_size). A sequence therefore depends on (seed, split, step, j) only: not
on the world size, the rank that asks, or what was asked before, so every data-parallel layout and
every resumed run sees the same global batches. Validation uses split "val" with step = the eval
batch number, so each eval pass sees the same batches. In a data-parallel step of K micro batches
of size b, rank r's micro batch k holds the sequences j = (k·world + r)·b + i, i < b
(`micro_batches`).

torch is imported only to hand batches over, so the launcher's pre-flight opens data without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

from mupctl.data.corpus import FILENAME, load_tokens
from mupctl.data.prepare import DTYPES
from mupctl.errors import UserError

if TYPE_CHECKING:
    import torch

SPLITS = {"train": 0, "val": 1}


class DataSpec(Protocol):
    """What `open_data` reads from the recipe's `data` section."""

    source: str
    path: str | None
    val_fraction: float


@dataclass(frozen=True)
class TokenData:
    """Token arrays per split (None for "synthetic") and the sampling rule over them."""

    source: str
    seq_len: int
    seed: int
    vocab_size: int
    splits: dict[str, np.ndarray] | None = field(repr=False)
    path: str | None = None

    @property
    def train_tokens(self) -> int | None:
        """Tokens in the train split; None for "synthetic" (unbounded)."""
        return None if self.splits is None else len(self.splits["train"])

    @property
    def val_tokens(self) -> int | None:
        """Tokens in the val split; None for "synthetic" (unbounded)."""
        return None if self.splits is None else len(self.splits["val"])

    def sequence(self, split: str, step: int, j: int) -> np.ndarray:
        """The seq_len + 1 tokens of sequence j (int64): a pure function of (seed, split, step, j)."""
        rng = np.random.default_rng([self.seed, SPLITS[split], step, j])
        if self.splits is None:
            return rng.integers(0, self.vocab_size, self.seq_len + 1)
        tokens = self.splits[split]
        o = int(rng.integers(0, len(tokens) - self.seq_len))
        return tokens[o:o + self.seq_len + 1].astype(np.int64)

    def batch(self, split: str, step: int, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): LongTensors (len(indices), seq_len) for these global indices; y is x shifted by one."""
        import torch
        rows = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for r, j in enumerate(indices):
            rows[r] = self.sequence(split, step, j)
        return torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())

    def micro_batches(self, split: str, step: int, rank: int, world: int, micro: int, accum: int,
                      device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Rank `rank`'s `accum` micro batches of `micro` sequences of (split, step), on `device`."""
        for k in range(accum):
            start = (k * world + rank) * micro
            x, y = self.batch(split, step, range(start, start + micro))
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def describe(self) -> str:
        """One line: source, token counts, path."""
        if self.splits is None:
            return f"synthetic: uniform random tokens in [0, {self.vocab_size})"
        where = self.path or f"built-in {FILENAME}"
        return f"{self.source}: {self.train_tokens:,} train + {self.val_tokens:,} val tokens ({where})"


def open_data(data_cfg: DataSpec, vocab_size: int, seq_len: int, seed: int) -> TokenData:
    """Open `data_cfg.source` ("embedded" | "bin" | "synthetic") for a model's vocab_size and seq_len."""
    if data_cfg.source == "synthetic":
        return TokenData("synthetic", seq_len, seed, vocab_size, None)
    if data_cfg.source == "embedded":
        splits, path = _embedded(data_cfg.val_fraction, vocab_size), None
    elif data_cfg.source == "bin":
        splits, path = _bin(data_cfg.path, vocab_size), str(data_cfg.path)
    else:
        raise UserError(f"must be embedded, bin or synthetic, got {data_cfg.source!r}", "data.source")
    for name, tokens in splits.items():
        if len(tokens) <= seq_len:
            raise UserError(f"the {name} split has {len(tokens)} tokens, fewer than seq_len + 1 = "
                            f"{seq_len + 1}", "model.seq_len")
    return TokenData(data_cfg.source, seq_len, seed, vocab_size, splits, path)


def _embedded(val_fraction: float, vocab_size: int) -> dict[str, np.ndarray]:
    """Fixed split: the last `val_fraction` of the corpus bytes is val."""
    if vocab_size < 256:
        raise UserError(f"the embedded corpus is byte-tokenized and needs vocab_size >= 256, "
                        f"got {vocab_size}", "model.vocab_size")
    if not 0 < val_fraction < 1:
        raise UserError(f"must be between 0 and 1 (exclusive), got {val_fraction}", "data.val_fraction")
    tokens = load_tokens()
    cut = len(tokens) - int(len(tokens) * val_fraction)
    return {"train": tokens[:cut], "val": tokens[cut:]}


ID_CHECK_TOKENS = 1 << 26  # token ids checked against vocab_size per split before launch (128 MiB of uint16)


def _bin(path: str | None, vocab_size: int) -> dict[str, np.ndarray]:
    """Memory-map train.bin and val.bin with the dtype recorded in meta.json (see `prepare`)."""
    if not path:
        raise UserError("required when data.source is bin (make one with `mupctl data prepare`)",
                        "data.path")
    root = Path(path).expanduser()
    meta_path = root / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        dtype, data_vocab = meta["dtype"], int(meta["vocab_size"])
    except FileNotFoundError:
        raise UserError(f"{meta_path} not found (make it with `mupctl data prepare`)", "data.path") from None
    except OSError as err:
        raise UserError(f"cannot read {meta_path} ({err.strerror})", "data.path") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{meta_path} is not valid shard metadata ({err!r})", "data.path") from None
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise UserError(f"{meta_path}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", "data.path")
    if data_vocab < 1:
        raise UserError(f"{meta_path}: vocab_size must be > 0, got {data_vocab}", "data.path")
    if data_vocab > vocab_size:
        raise UserError(f"{root} was tokenized with vocab_size {data_vocab}, larger than the model's "
                        f"{vocab_size}", "model.vocab_size")
    splits = {}
    for name in SPLITS:
        f = root / f"{name}.bin"
        if not f.is_file():
            raise UserError(f"{f} {'is not a file' if f.exists() else 'not found'}", "data.path")
        size, recorded = f.stat().st_size, meta.get(f"{name}_tokens")
        n = size // DTYPES[dtype].itemsize
        if size % DTYPES[dtype].itemsize or (type(recorded) is int and recorded != n):
            said = "" if type(recorded) is not int else f", meta.json says {recorded:,} tokens"
            raise UserError(f"{f} is {size:,} bytes of {dtype}{said}: truncated, or not from the same `mupctl data "
                            "prepare` as meta.json; prepare the data again", "data.path")
        # np.memmap refuses empty files; an empty split fails the seq_len check in open_data.
        splits[name] = np.memmap(f, DTYPES[dtype], mode="r", shape=(n,)) if n else np.empty(0, DTYPES[dtype])
        top = int(splits[name][:ID_CHECK_TOKENS].max()) if n else 0
        if top >= data_vocab:
            raise UserError(f"{f} holds token id {top}, not below meta.json's vocab_size {data_vocab}: the shards "
                            "are damaged or not from `mupctl data prepare`", "data.path")
    return splits
