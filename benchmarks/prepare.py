"""Throughput and memory of `mupctl data prepare` on a generated JSONL corpus (issue 25).

    python benchmarks/prepare.py [--mb 200] [--work DIR] [--tokenizer tokenizer.json | --bpe] [--workers 1,N]

Writes DIR/corpus.jsonl (≥ --mb MB; records of 1–8 KB cut from real text already on the machine:
the embedded Shakespeare and the Python sources `benchmarks/code_corpus.py` reads), then runs
`prepare` once per worker count, each in a fresh child process, and prints one line per run: wall
seconds, tokens/s (all tokens written / wall time of the `prepare` call), and the peak RSS
(`ru_maxrss`) of the parent process and of its largest worker.

Tokenizer: `--tokenizer`, else a GPT-2 `tokenizer.json` (vocab 50257) shipped inside an installed
package if one is found under site-packages, else the byte tokenizer. `--bpe` instead trains a
GPT-2-sized byte-level BPE (50257 tokens with `<|endoftext|>`, GPT-2's pre-tokenizer) on the first
10 MB of the corpus: the cost of a real subword tokenizer, where the byte tokenizer has almost none.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from code_corpus import roots, sources  # noqa: E402

from mupctl.data import load_text  # noqa: E402
from mupctl.data.prepare import cpus  # noqa: E402
from mupctl.data.tokenizer import train_byte_bpe  # noqa: E402


def texts():
    yield load_text()
    for root in roots():
        yield from sources(root)


def write_corpus(path: Path, mb: int) -> int:
    """JSONL records {"id", "text"} of 1-8 KB until the file holds `mb` MB; passes over the texts
    again with shifted cuts when they run out. Returns the number of records."""
    n, size, shift = 0, 0, 0
    with path.open("w", encoding="utf-8") as f:
        while size < mb * 1_000_000:
            for text in texts():
                pos = shift
                while pos < len(text) and size < mb * 1_000_000:
                    length = 1000 + (n * 2654435761) % 7000
                    line = json.dumps({"id": n, "text": text[pos:pos + length]}) + "\n"
                    f.write(line)
                    size += len(line.encode())
                    n, pos = n + 1, pos + length
            shift += 397
    return n


def gpt2_tokenizer() -> str | None:
    """A tokenizer.json of 50257 tokens (GPT-2's) under site-packages, if a package ships one."""
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("tokenizer.json")):
        try:
            if len(json.loads(path.read_text())["model"]["vocab"]) == 50257:
                return str(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def child(corpus: str, out: str, workers: int, tokenizer: str | None) -> None:
    """One prepare in this process; prints its numbers as JSON."""
    from mupctl.data import prepare
    t0 = time.perf_counter()
    meta = prepare([corpus], out, tokenizer=tokenizer, workers=workers, force=True)
    seconds = time.perf_counter() - t0
    tokens = meta["train_tokens"] + meta["val_tokens"]
    print(json.dumps({"workers": workers, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                      "parent_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--work", type=Path, default=None, help="default: a temporary directory")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--bpe", action="store_true", help="train a GPT-2-sized BPE on the corpus and use it")
    ap.add_argument("--workers", default=f"1,{cpus()}")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        corpus, out, workers, tokenizer = args.child
        return child(corpus, out, int(workers), tokenizer or None)
    tokenizer = args.tokenizer or (None if args.bpe else gpt2_tokenizer())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "corpus.jsonl"
        t0 = time.perf_counter()
        records = write_corpus(corpus, args.mb)
        if args.bpe:
            with corpus.open() as f:
                sample = [json.loads(line)["text"] for line in f.read(10_000_000).splitlines()[:-1]]
            tokenizer = str(train_byte_bpe(sample, 50257, work / "bpe-50257.json", ["<|endoftext|>"]))
        print(f"corpus: {corpus.stat().st_size / 1e6:.1f} MB, {records:,} records ({time.perf_counter() - t0:.1f} s); "
              f"tokenizer: {tokenizer or 'bytes'}; {os.cpu_count()} CPUs", flush=True)
        for workers in (int(w) for w in args.workers.split(",")):
            res = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(work / "out"), str(workers),
                                  tokenizer or ""], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            worker = f"{r['worker_rss_mb']:.0f} MB" if r["workers"] > 1 else "none (runs in the parent)"
            print(f"workers {r['workers']}: {r['seconds']:.1f} s, {r['tokens']:,} tokens, "
                  f"{r['tokens_per_s'] / 1e6:.2f} M tokens/s, peak RSS parent {r['parent_rss_mb']:.0f} MB, "
                  f"largest worker {worker}", flush=True)


if __name__ == "__main__":
    main()
