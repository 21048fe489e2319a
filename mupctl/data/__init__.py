"""The data layer: the embedded corpus, tokenizers, pre-tokenized shards, deterministic sampling."""

from mupctl.data.corpus import load_text
from mupctl.data.prepare import prepare
from mupctl.data.source import TokenData, open_data
from mupctl.data.tokenizer import ByteTokenizer, load_tokenizer

__all__ = ["ByteTokenizer", "TokenData", "load_text", "load_tokenizer", "open_data", "prepare"]
