"""`mupctl train` end to end with real torchrun processes (gloo on CPU)."""

import json

import pytest

from conftest import ROOT

SMALL = ["--set", "model.seq_len=64", "--set", "train.global_batch=8", "--set", "train.micro_batch=4",
         "--set", "train.log_interval=1", "--set", "train.eval_interval=0", "--set", "checkpoint.interval=0",
         "--set", "train.telemetry_interval=0"]


def rows(run_dir, key="loss"):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if key in json.loads(line)]


def test_default_recipe_learns_real_text(cli, tmp_path):
    """The README's first command, shortened: validation loss falls well below its start."""
    run = tmp_path / "run"
    res = cli("train", "--run-dir", run, "--set", "train.steps=40", "--set", "train.eval_interval=40")
    assert res.returncode == 0, res.stdout + res.stderr
    val = [r["val_loss"] for r in rows(run, "val_loss")]
    assert val[0] > 5.0            # ≈ ln 256 at init
    assert val[-1] < val[0] - 2.0  # real margin after 40 steps
    train = rows(run)
    assert {"step", "loss", "lr", "tokens", "tokens_per_s", "mfu", "grad_norm"} <= set(train[-1])
    assert train[-1]["tokens"] == 40 * 16 * 256
    # non-TTY: plain one-line-per-interval output that agents can read
    assert "step 40  loss" in res.stdout and "mupctl worker: fresh" in res.stdout
    for name in ("recipe.yaml", "plan.json", "metrics.jsonl", "train.log"):
        assert (run / name).is_file()
    assert json.loads((run / "plan.json").read_text())["launch"]["argv"][-1] == str(run)


def losses(cli, tmp_path, name, *extra):
    run = tmp_path / name
    res = cli("train", "--run-dir", run, "--set", "train.steps=6", "--set", "launch.device=cpu", *SMALL, *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return [r["loss"] for r in rows(run)]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_rank(cli, tmp_path, strategy):
    """Same global batch, fp32: 2 gloo ranks (DDP or FSDP2) follow the 1-process trajectory."""
    one = losses(cli, tmp_path, "one", "--set", f"launch.strategy={strategy}")
    two = losses(cli, tmp_path, "two", "--set", f"launch.strategy={strategy}", "--nproc-per-node", "2")
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, rel=2e-5, abs=1e-6)
    assert one[-1] < one[0]


def test_fsdp_compiled_pieces_follow_eager(cli, tmp_path):
    """train.compile under FSDP2 compiles each block and the head's loss on its own
    (GPT.compile_pieces); 2 gloo ranks then follow the eager trajectory."""
    fsdp = ["--set", "launch.strategy=fsdp", "--nproc-per-node", "2"]
    eager = losses(cli, tmp_path, "eager", *fsdp)
    compiled = losses(cli, tmp_path, "compiled", *fsdp, "--set", "train.compile=true")
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_bf16_telemetry_under_fsdp_matches_ddp(cli, tmp_path):
    """Telemetry steps record every role's activation RMS under FSDP2's bf16 mixed precision, whose
    input casting copies containers (a list argument filled by the blocks came back empty), with
    activation checkpointing on; the values agree with DDP's."""
    extra = ["--set", "train.precision=bf16", "--set", "train.telemetry_interval=2",
             "--set", "train.activation_checkpointing=true"]
    acts = {}
    for strategy in ("ddp", "fsdp"):
        losses(cli, tmp_path, strategy, "--set", f"launch.strategy={strategy}", *extra)
        acts[strategy] = [r["act_rms"] for r in rows(tmp_path / strategy, "act_rms")]
    assert [r.keys() for r in acts["fsdp"]] == [r.keys() for r in acts["ddp"]]
    assert len(acts["ddp"]) == 3 and {"attn_out", "mlp_out", "residual", "logits"} <= set(acts["ddp"][0])
    for ddp, fsdp in zip(acts["ddp"], acts["fsdp"]):
        assert fsdp == pytest.approx(ddp, rel=2e-2)


@pytest.mark.parametrize("recipe", ["mup", "depth_mup"])
def test_two_ranks_muon(cli, tmp_path, recipe):
    extra = ["--set", "optimizer.name=muon", "--set", f"scaling.recipe={recipe}", "--set", "scaling.base.n_layers=1"]
    one = losses(cli, tmp_path, "one", *extra)
    two = losses(cli, tmp_path, "two", *extra, "--nproc-per-node", "2")
    assert two == pytest.approx(one, rel=1e-4, abs=1e-5)


def test_bad_data_path_exits_2_before_launch(cli, tmp_path):
    res = cli("train", "--set", "data.source=bin", "--set", f"data.path={tmp_path / 'missing'}",
              "--set", f"run.root={tmp_path / 'runs'}")
    assert res.returncode == 2 and "data.path" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_run_dir_of_an_existing_run_is_refused(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "plan.json").write_text("{}")
    res = cli("train", "--run-dir", run)
    assert res.returncode == 2 and "mupctl resume" in res.stderr


def test_default_run_dir_is_named_and_contained(cli, tmp_path):
    res = cli("train", "--set", "name=../../escape", "--set", f"run.root={tmp_path}")
    assert res.returncode == 2 and "name" in res.stderr


def test_tiny_recipe_is_the_embedded_default(cli):
    a = json.loads(cli("plan", "--json").stdout)
    b = json.loads(cli("plan", ROOT / "recipes" / "tiny.yaml", "--json").stdout)
    assert a["hash"] == b["hash"]


def test_two_nodes_join_one_run(tmp_path):
    """Two `mupctl train` processes as two 'nodes' (c10d rendezvous on localhost) share one run dir
    and follow the same trajectory as one node with two processes."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "multi"
    args = [sys.executable, "-m", "mupctl", "train", "--run-dir", str(run), "--nnodes", "2", "--set",
            f"launch.rdzv_endpoint=127.0.0.1:{port}", "--set", "launch.rdzv_id=test", "--set", "train.steps=6",
            "--set", "launch.device=cpu", *SMALL]
    def start():
        return subprocess.Popen(args, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    first = start()  # the second node arrives once the first has made the run (else both make it)
    deadline = time.time() + 60
    while not (run / "plan.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    procs = [first, start()]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert any("joining the 2-node run" in o for o in outs)
    single = tmp_path / "single"
    from conftest import run_cli
    res = run_cli("train", "--run-dir", single, "--nproc-per-node", "2", "--set", "train.steps=6", "--set",
                  "launch.device=cpu", *SMALL)
    assert res.returncode == 0, res.stderr
    assert [r["loss"] for r in rows(run)] == pytest.approx([r["loss"] for r in rows(single)], rel=1e-6)


def test_wandb_offline_needs_no_network_and_keeps_its_id(tmp_path):
    pytest.importorskip("wandb")
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # no key, no mode
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "mupctl", "train", "--run-dir", str(run), "--set", "train.steps=4",
                          "--set", "logging.wandb=offline", *SMALL], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    run_id = (run / "wandb_id").read_text().strip()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(run_id)
