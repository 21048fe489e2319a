"""Tokenizers: UTF-8 bytes (the default, vocab 256) or a local HuggingFace `tokenizer.json`.

Both expose `vocab_size`, `name` (recorded in meta.json), `encode(str) -> np.ndarray` and
`decode(ids) -> str`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from mupctl.errors import UserError

FIELD = "--tokenizer"


class ByteTokenizer:
    """Token i is byte i of the UTF-8 encoding; decoding replaces invalid sequences with U+FFFD."""

    vocab_size = 256
    name = "bytes"

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(np.asarray(ids).tolist()).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers.Tokenizer` loaded from a tokenizer.json; no special tokens are added."""

    def __init__(self, path: Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UserError("install the 'tokenizers' package to use a tokenizer.json", FIELD) from None
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as err:
            raise UserError(f"cannot load {path} as a HuggingFace tokenizer.json ({err})", FIELD) from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.name = str(path)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def load_tokenizer(path: str | Path | None) -> ByteTokenizer | HFTokenizer:
    """None -> `ByteTokenizer`; a path to a tokenizer.json -> `HFTokenizer`."""
    if path is None:
        return ByteTokenizer()
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise UserError(f"no such file: {path} (expected a HuggingFace tokenizer.json)", FIELD)
    return HFTokenizer(p)
