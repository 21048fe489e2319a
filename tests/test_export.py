"""`mupctl export --format hf`: the exported model is mupctl's model, to fp32 rounding, in plain
transformers code (none / mup / depth_mup × tied / untied × Llama / GPT-2 blocks), and bad input
exits 2 with nothing written."""

import json

import pytest
import torch

from helpers.bpe import train_bpe
from helpers.runs import make_plan, random_model, save_run
from mupctl.export import export_hf

transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return train_bpe(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def hf_model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.mark.parametrize("style", ["llama", "gpt2"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("recipe", ["none", "mup", "depth_mup"])
def test_exported_logits_equal_mupctl(tmp_path, recipe, tied, style):
    plan = make_plan(recipe, style, tied)
    model = random_model(plan)
    info = export_hf(save_run(tmp_path / "run", plan, model), tmp_path / "hf")
    hf = hf_model(tmp_path / "hf")
    assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[style]
    assert info["tied"] is tied and hf.config.tie_word_embeddings is tied
    idx = torch.randint(0, 256, (2, plan.model.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert ours.abs().max() > 3  # logits of a size where a wrong factor shows
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    names = safetensors.load_file(tmp_path / "hf" / "model.safetensors").keys()
    assert ("lm_head.weight" in names) is not tied  # a tied run stays tied: the ratio went into the final norm


@pytest.mark.parametrize("style, bias", [("llama", True), ("gpt2", False)])
def test_biases_on_llama_and_absent_on_gpt2(tmp_path, style, bias):
    """Llama with model.bias (attention_bias, mlp_bias); GPT-2 without (zeros where GPT-2 has a bias)."""
    plan = make_plan("depth_mup", style, tied=True, bias=bias)
    model = random_model(plan)
    export_hf(save_run(tmp_path / "run", plan, model), tmp_path / "hf")
    hf = hf_model(tmp_path / "hf")
    assert hf.model.layers[0].self_attn.q_proj.bias is not None if style == "llama" else \
        not hf.transformer.h[0].attn.c_attn.bias.any()
    idx = torch.randint(0, 256, (2, plan.model.seq_len), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), atol=1e-5, rtol=0)


def test_bf16_export_is_the_fp32_export_rounded(tmp_path):
    plan = make_plan("mup", "llama", tied=True)
    run = save_run(tmp_path / "run", plan, random_model(plan))
    export_hf(run, tmp_path / "fp32")
    export_hf(run, tmp_path / "bf16", dtype="bf16")
    full = safetensors.load_file(tmp_path / "fp32" / "model.safetensors")
    half = safetensors.load_file(tmp_path / "bf16" / "model.safetensors")
    assert full.keys() == half.keys()
    assert all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], full[k].to(torch.bfloat16)) for k in full)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert hf_model(tmp_path / "bf16").dtype == torch.bfloat16


def test_byte_tokenizer_and_a_runs_tokenizer_json_load_with_autotokenizer(tmp_path, hf_tokenizer):
    text = "Now is the winter of our discontent — héllo\n\n"
    plan = make_plan("none", "gpt2")
    export_hf(save_run(tmp_path / "run", plan, random_model(plan)), tmp_path / "bytes")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "bytes")
    assert tok(text)["input_ids"] == list(text.encode()) and tok.decode(list(text.encode())) == text

    from mupctl.data import load_tokenizer, prepare
    (tmp_path / "corpus.txt").write_text(text * 50)
    prepare([tmp_path / "corpus.txt"], tmp_path / "shards", tokenizer=str(hf_tokenizer))
    plan = make_plan("mup", "llama", data={"source": "bin", "path": str(tmp_path / "shards")}, vocab_size=320)
    info = export_hf(save_run(tmp_path / "run-bpe", plan, random_model(plan)), tmp_path / "bpe")
    assert info["tokenizer"] == str(hf_tokenizer.resolve())
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "bpe")
    assert tok(text)["input_ids"] == load_tokenizer(str(hf_tokenizer)).encode(text).tolist()


def test_synthetic_run_exports_without_tokenizer(tmp_path, cli):
    plan = make_plan("mup", "llama", data={"source": "synthetic"})
    run = save_run(tmp_path / "run", plan, random_model(plan))
    res = cli("export", run, "--format", "hf", "--out", tmp_path / "hf", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["tokenizer"] is None
    assert "no tokenizer files exported (synthetic tokens)" in res.stderr
    assert not (tmp_path / "hf" / "tokenizer.json").exists() and hf_model(tmp_path / "hf") is not None


def test_newest_damaged_checkpoint_is_skipped_and_step_picks_one(tmp_path, cli):
    plan = make_plan("depth_mup", "gpt2")
    run = save_run(tmp_path / "run", plan, random_model(plan), steps=(1, 2))
    shard = next((run / "checkpoints" / "step_00000002").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # a torn write
    res = cli("export", run, "--format", "hf", "--out", tmp_path / "hf", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["step"] == 1
    assert "warning: checkpoint step_00000002 is unreadable (shard" in res.stderr
    assert "falling back to step_00000001" in res.stderr
    res = cli("export", run, "--step", "2", "--format", "hf", "--out", tmp_path / "hf2")
    assert res.returncode == 2 and res.stderr.startswith("error: --step: checkpoint step_00000002 is unusable")
    assert not (tmp_path / "hf2").exists()


def test_force_replaces_an_export(tmp_path, cli):
    plan = make_plan("mup", "gpt2", tied=True)
    run = save_run(tmp_path / "run", plan, random_model(plan))
    out = tmp_path / "hf"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    res = cli("export", run, "--format", "hf", "--out", out)
    assert res.returncode == 2 and "--force" in res.stderr and (out / "stale.txt").exists()
    res = cli("export", run, "--format", "hf", "--out", out, "--force")
    assert res.returncode == 0 and res.stdout.startswith(f"wrote {out}: GPT2LMHeadModel from step 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]  # no temporary or set-aside dir left
    assert not (out / "stale.txt").exists() and (out / "config.json").exists()


@pytest.mark.parametrize("model, field", [
    ({"norm": "layernorm"}, "model.norm"),                                   # Llama-style with LayerNorm
    ({"position": "learned"}, "model.position"),
    ({"activation": "gelu", "norm": "layernorm", "position": "learned", "n_kv_heads": 2}, "model.n_kv_heads"),
])
def test_inexpressible_models_exit_2_naming_the_field(tmp_path, cli, model, field):
    plan = make_plan("mup", "llama", **model)
    run = save_run(tmp_path / "run", plan, random_model(plan))
    res = cli("export", run, "--format", "hf", "--out", tmp_path / "hf")
    assert res.returncode == 2 and res.stderr.startswith(f"error: {field}: ") and res.stderr.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_bad_flags_exit_2_with_nothing_written(tmp_path, cli):
    plan = make_plan("none", "llama")
    run = save_run(tmp_path / "run", plan, random_model(plan))
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "empty-run" / "plan.json").write_text((run / "plan.json").read_text())
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "hf"
    for args, field in [(("--format", "onnx"), "--format"), (("--format", "hf", "--dtype", "fp16"), "--dtype"),
                        (("--format", "hf", "--step", "7"), "--step")]:
        res = cli("export", run, *args, "--out", out)
        assert res.returncode == 2 and res.stderr.startswith(f"error: {field}: "), res.stderr
    for run_dir, out_dir, field in [(tmp_path / "missing", out, "RUN_DIR"), (tmp_path / "empty-run", out, "RUN_DIR"),
                                    (run, tmp_path / "a-file" / "x", "--out"), (run, run, "--out"),
                                    (run, tmp_path, "--out")]:
        res = cli("export", run_dir, "--format", "hf", "--out", out_dir, "--force")
        assert res.returncode == 2 and res.stderr.startswith(f"error: {field}: "), res.stderr
    assert not out.exists() and (run / "plan.json").exists()
