"""A small byte-level BPE tokenizer.json trained on the embedded corpus (no download), for tests."""

from pathlib import Path

from mupctl.data import load_text


def train_bpe(path: Path, vocab_size: int = 300) -> Path:
    """Train a GPT-2-style (ByteLevel) BPE of at most `vocab_size` tokens and save it to `path`."""
    import tokenizers
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(load_text()[:20_000].splitlines(), trainer)
    tok.save(str(path))
    return path
