"""A byte-level corpus from the Python sources already on this machine, for sweeps that must not
repeat their data: `python benchmarks/code_corpus.py OUT` writes OUT/{train.bin,val.bin,meta.json}
(`data.source: bin`, `data.path: OUT`) through `mupctl data prepare`'s `prepare`.

Why: the embedded Shakespeare (1.85 M training tokens) is read once every ~110 steps of the sweep
proxies (64 × 256 tokens a step), so a 1,000-step cell reads it ~9 times; wide models and Muon
then memorize it (train loss 0.2 while val loss rises) and a val-loss LR sweep measures
memorization. The standard library and torch's own sources are tens of MB of real text on every
machine; which versions they are is recorded in OUT/corpus.json.

Every UTF-8 `*.py` file under the two roots (site-packages of the stdlib skipped, files that are
not UTF-8 skipped) becomes one input of `prepare`, which holds out the last `val_fraction` of each
file: val mixes every file, in the same proportion as train.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import sysconfig
import tempfile
from importlib.metadata import version
from pathlib import Path

from mupctl.data.prepare import prepare


def roots() -> list[Path]:
    """The stdlib and the installed torch package (found without importing torch)."""
    torch_dirs = importlib.util.find_spec("torch").submodule_search_locations
    return [Path(sysconfig.get_paths()["stdlib"]), Path(list(torch_dirs)[0])]


def sources(root: Path):
    """The text of every UTF-8 .py file below root, sorted by path, outside site-packages."""
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.relative_to(root).parts:
            continue
        try:
            yield path.read_text("utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def main(out: str) -> None:
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for root in roots():
            counts[str(root)] = 0
            for text in sources(root):
                (Path(tmp) / f"{sum(counts.values()):05d}.txt").write_text(text, encoding="utf-8")
                counts[str(root)] += 1
        meta = prepare([tmp], out)
    info = {"python": platform.python_version(), "torch": version("torch"), "files": counts,
            "train_tokens": meta["train_tokens"], "val_tokens": meta["val_tokens"]}
    (Path(out) / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"code corpus {out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val byte tokens "
          f"from {sum(counts.values())} files (Python {info['python']}, torch {info['torch']})")


if __name__ == "__main__":
    main(sys.argv[1])
