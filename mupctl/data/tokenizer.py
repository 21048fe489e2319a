"""Tokenizers: UTF-8 bytes (the default, vocab 256) or a local HuggingFace `tokenizer.json`.

Both expose `vocab_size`, `name` (recorded in meta.json), `encode(str) -> np.ndarray` and
`decode(ids) -> str`. `data_tokenizer` tells which one a run's data was made with;
`byte_tokenizer_json` is the byte tokenizer as a HuggingFace tokenizer (for `mupctl export`).
"""

from __future__ import annotations

import json
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


def data_tokenizer(data) -> str | None:
    """The `name` of the tokenizer a run's data (the plan's `data` section) was made with: "bytes" for the
    embedded corpus, meta.json's "tokenizer" for bin shards ("bytes" or a tokenizer.json path), None for
    synthetic tokens or shards whose meta.json cannot be read."""
    if data.source == "embedded":
        return ByteTokenizer.name
    if data.source != "bin" or not data.path:
        return None
    try:
        name = json.loads((Path(data.path).expanduser() / "meta.json").read_text()).get("tokenizer")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def gpt2_byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (`bytes_to_unicode`), the alphabet of
    HuggingFace's ByteLevel pre-tokenizer: printable Latin-1 bytes stand for themselves, the other 68
    map to U+0100 onwards in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def byte_tokenizer_json():
    """`ByteTokenizer` as a `tokenizers.Tokenizer` (token id = byte value, nothing added): a BPE with the
    256 ByteLevel characters as its vocabulary in byte order and no merges, behind a ByteLevel
    pre-tokenizer without regex splitting or prefix space; decoding is ByteLevel's (invalid UTF-8 →
    U+FFFD)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tok = Tokenizer(models.BPE(vocab={c: b for b, c in enumerate(gpt2_byte_chars())}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_byte_bpe(texts: Iterable[str], vocab_size: int, path: Path, special_tokens: list[str] = ()) -> Path:
    """Train a GPT-2-style byte-level BPE (ByteLevel pre-tokenizer and decoder, the 256 byte
    characters always in the vocabulary) of at most `vocab_size` tokens on `texts`; save it as a
    tokenizer.json at `path` (for tests and benchmarks: no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       special_tokens=list(special_tokens)))
    tok.save(str(path))
    return Path(path)
