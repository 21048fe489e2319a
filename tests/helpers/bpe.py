"""A small byte-level BPE tokenizer.json trained on the embedded corpus (no download), for tests."""

from pathlib import Path

from mupctl.data import load_text
from mupctl.data.tokenizer import train_byte_bpe


def train_bpe(path: Path, vocab_size: int = 300) -> Path:
    """A GPT-2-style (ByteLevel) BPE of at most `vocab_size` tokens, trained on the first 20,000
    characters of the embedded Shakespeare, saved to `path`."""
    return train_byte_bpe(load_text()[:20_000].splitlines(), vocab_size, path)
