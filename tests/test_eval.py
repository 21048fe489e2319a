"""`mupctl eval`: the held-out loss as docs/export.md defines it equals the loss transformers computes on
the export of the same checkpoint, end to end from a real sharded `mupctl train` run; bad input exits 2."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.runs import make_plan, random_model, save_run
from mupctl.data import load_text, prepare

transformers = pytest.importorskip("transformers")

TRAIN = ["--nproc-per-node", "2", "--set", "launch.strategy=fsdp", "--set", "launch.device=cpu",
         "--set", "scaling.base.d_model=64", "--set", "scaling.base.n_layers=1",
         "--set", "scaling.recipe=depth_mup", "--set", "scaling.alpha_in=2", "--set", "scaling.alpha_out=4",
         "--set", "model.tie_embeddings=true", "--set", "model.seq_len=64", "--set", "train.steps=4",
         "--set", "train.global_batch=4", "--set", "train.micro_batch=2", "--set", "train.eval_interval=0",
         "--set", "checkpoint.interval=2", "--set", "train.telemetry_interval=0"]


def hf_loss(path, text: str, seq_len: int) -> tuple[float, int]:
    """The definition, computed with transformers alone: its tokenizer, windows of seq_len + 1, mean CE."""
    ids = transformers.AutoTokenizer.from_pretrained(path)(text)["input_ids"]
    k = len(ids) // (seq_len + 1)
    rows = torch.tensor(ids[:k * (seq_len + 1)]).view(k, seq_len + 1)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(rows[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten()).item(), k * seq_len


def eval_json(cli, *args) -> dict:
    res = cli("eval", *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run of two FSDP ranks (sharded checkpoints at steps 2 and 4)."""
    from conftest import invoke
    run = tmp_path_factory.mktemp("eval") / "run"
    res = invoke("train", "--run-dir", run, *TRAIN)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((run / "checkpoints" / "step_00000004").glob("*.distcp"))) == 2  # one shard per rank
    return run


def test_eval_equals_transformers_on_the_export(trained, cli, tmp_path):
    text = load_text()[-9000:]  # the Sonnets: outside the training split
    (tmp_path / "held.txt").write_text(text)
    got = eval_json(cli, trained, "--text", tmp_path / "held.txt")
    assert got["step"] == 4 and got["tokens"] == (9000 // 65) * 64
    assert got["bits_per_byte"] == pytest.approx(got["loss"] / math.log(2), rel=1e-12)
    res = cli("export", trained, "--format", "hf", "--out", tmp_path / "hf")
    assert res.returncode == 0, res.stderr
    loss, tokens = hf_loss(tmp_path / "hf", text, 64)
    assert tokens == got["tokens"] and got["loss"] == pytest.approx(loss, abs=1e-5)
    older = eval_json(cli, trained, "--step", "2", "--text", tmp_path / "held.txt")
    assert older["step"] == 2 and older["loss"] != got["loss"]
    res = cli("eval", trained, "--text", tmp_path / "held.txt")
    assert res.stdout.startswith(f"step 4: loss {got['loss']:.4f} nats over {got['tokens']:,} tokens")


def test_windows_drop_the_partial_tail_and_data_reads_val_bin(tmp_path, cli):
    plan = make_plan("mup", "gpt2", tied=True)
    run = save_run(tmp_path / "run", plan, random_model(plan))
    text = load_text()[:20_000]
    (tmp_path / "a.txt").write_text(text[:33 * 10])  # 10 windows of 33 bytes
    (tmp_path / "b.txt").write_text(text[:33 * 10 + 32])  # + a partial one
    a = eval_json(cli, run, "--text", tmp_path / "a.txt")
    assert a == eval_json(cli, run, "--text", tmp_path / "b.txt") and a["tokens"] == 320

    rows = torch.tensor(list(text[:330].encode())).view(10, 33)
    with torch.no_grad():
        direct = random_model(plan)(rows[:, :-1], rows[:, 1:]).item()
    assert a["loss"] == pytest.approx(direct, abs=1e-6)

    (tmp_path / "corpus.txt").write_text(text)
    prepare([tmp_path / "corpus.txt"], tmp_path / "shards", val_fraction=0.25)
    (tmp_path / "val.txt").write_text(text[len(text) - 5000:])  # val.bin: the file's last 25%
    assert eval_json(cli, run, "--data", tmp_path / "shards") == eval_json(cli, run, "--text", tmp_path / "val.txt")


def test_bad_input_exits_2(tmp_path, cli, hf_shards):
    plan = make_plan("none", "llama")
    run = save_run(tmp_path / "run", plan, random_model(plan))
    synthetic = make_plan("none", "llama", data={"source": "synthetic"})
    synth_run = save_run(tmp_path / "synthetic", synthetic, random_model(synthetic))
    (tmp_path / "short.txt").write_text("x" * 32)  # seq_len + 1 = 33 tokens needed
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 20)
    (tmp_path / "ok.txt").write_text("y" * 100)
    cases = [
        ((run,), "--text", "give exactly one of"),
        ((run, "--text", tmp_path / "ok.txt", "--data", hf_shards), "--text", "give exactly one of"),
        ((run, "--text", tmp_path / "short.txt"), "--text", "has 32 tokens, fewer than model.seq_len + 1 = 33"),
        ((run, "--text", tmp_path / "latin1.txt"), "--text", "is not UTF-8"),
        ((run, "--text", tmp_path / "missing.txt"), "--text", "no such file"),
        ((synth_run, "--text", tmp_path / "ok.txt"), "--text", "synthetic"),
        ((run, "--data", tmp_path), "--data", "meta.json not found"),
        ((run, "--data", hf_shards), "--data", "larger than the model's 256"),
        ((run, "--step", "9", "--text", tmp_path / "ok.txt"), "--step", "no checkpoint of step 9"),
        ((tmp_path / "nope", "--text", tmp_path / "ok.txt"), "RUN_DIR", "not a mupctl run directory"),
    ]
    for args, field, words in cases:
        res = cli("eval", *args)
        assert res.returncode == 2 and res.stderr.startswith(f"error: {field}: ") and words in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1 and res.stdout == ""
    wide = make_plan("none", "llama", vocab_size=320)
    wide_run = save_run(tmp_path / "wide", wide, random_model(wide))
    res = cli("eval", wide_run, "--data", hf_shards)
    assert res.returncode == 2 and "was tokenized with" in res.stderr and "the run with bytes" in res.stderr


@pytest.fixture
def hf_shards(tmp_path):
    """Shards of a 300-token BPE (vocab above the byte models' 256)."""
    pytest.importorskip("tokenizers")
    from helpers.bpe import train_bpe
    (tmp_path / "t.txt").write_text(load_text()[:30_000])
    prepare([tmp_path / "t.txt"], tmp_path / "bpe", tokenizer=str(train_bpe(tmp_path / "tokenizer.json")))
    assert json.loads((tmp_path / "bpe" / "meta.json").read_text())["vocab_size"] > 256
    return tmp_path / "bpe"


def test_windows_helper_is_a_view():
    from mupctl.heldout import windows
    tokens = np.arange(100)
    rows = windows(tokens, 9, "--text")
    assert rows.shape == (10, 10) and np.shares_memory(rows, tokens) and rows[3, 0] == 30
