"""`mupctl train` end to end with real torchrun processes (gloo on CPU).

The runs are independent, so one module fixture starts them all, two at a time (`RUNS`), and each
test checks the runs it names; runs that several tests compare against are shared."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

import mupctl
from conftest import ROOT, run_many
from mupctl.errors import UserError
from mupctl.launch.launcher import new_run_dir
from mupctl.plan import changed_fields, compile_plan
from mupctl.recipe import load_recipe

SMALL = ["--set", "model.seq_len=64", "--set", "train.global_batch=8", "--set", "train.micro_batch=4",
         "--set", "train.log_interval=1", "--set", "train.eval_interval=0", "--set", "checkpoint.interval=0",
         "--set", "train.telemetry_interval=0", "--set", "train.steps=6", "--set", "launch.device=cpu"]
TWO = ["--nproc-per-node", "2"]
FSDP = ["--set", "launch.strategy=fsdp"]
BF16_TELEMETRY = ["--set", "train.precision=bf16", "--set", "train.telemetry_interval=2",
                  "--set", "train.activation_checkpointing=true"]
MUON = {recipe: ["--set", "optimizer.name=muon", "--set", f"scaling.recipe={recipe}", "--set", "scaling.base.n_layers=1"]
        for recipe in ("mup", "depth_mup")}
RUNS = {  # name → `mupctl train` arguments after --run-dir
    "default": ["--set", "train.steps=40", "--set", "train.eval_interval=40"],
    "one": SMALL + ["--set", "logging.wandb=offline"],  # also the wandb test's run
    "ddp2": SMALL + TWO + ["--json"],
    "fsdp2": SMALL + TWO + FSDP,
    "fsdp2-compiled": SMALL + TWO + FSDP + ["--set", "train.compile=true"],
    "bf16-ddp": SMALL + BF16_TELEMETRY,
    "bf16-fsdp": SMALL + BF16_TELEMETRY + FSDP,
    "deterministic": SMALL + ["--set", "train.deterministic=true"],
    **{f"muon-{r}-one": SMALL + args for r, args in MUON.items()},
    **{f"muon-{r}-two": SMALL + args + TWO for r, args in MUON.items()},
}


def rows(run_dir, key="loss"):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if key in json.loads(line)]


def losses(run_dir):
    return [r["loss"] for r in rows(run_dir)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (run dir, CompletedProcess)} of every run in RUNS; "one" runs without any WANDB_*
    variable (no key, no mode: logging.wandb offline must need neither)."""
    root = tmp_path_factory.mktemp("runs")
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("WANDB_")]}
    try:
        done = run_many({name: ["train", "--run-dir", root / name, *args] for name, args in RUNS.items()})
    finally:
        os.environ.update(saved)
    for name, res in done.items():
        assert res.returncode == 0, f"{name}: {res.stdout[-3000:]}{res.stderr[-3000:]}"
    return {name: (root / name, res) for name, res in done.items()}


def test_default_recipe_learns_real_text(runs):
    """The README's first command, shortened: validation loss falls well below its start."""
    run, res = runs["default"]
    val = [r["val_loss"] for r in rows(run, "val_loss")]
    assert val[0] > 5.0            # ≈ ln 256 at init
    assert val[-1] < val[0] - 2.0  # real margin after 40 steps
    train = rows(run)
    assert {"step", "loss", "lr", "tokens", "tokens_per_s", "mfu", "grad_norm"} <= set(train[-1])
    assert train[-1]["tokens"] == 40 * 16 * 256
    assert all(r["tokens_per_s"] > 0 for r in train)
    # non-TTY: plain one-line-per-interval output that agents can read, and a summary at the end
    assert "step 40  loss" in res.stdout and "mupctl worker: fresh" in res.stdout
    summary = res.stdout.splitlines()[-1]
    assert summary.startswith(f"mupctl: finished at step 40/40: loss {train[-1]['loss']:.4f}, val loss {val[-1]:.4f}, "
                              "163,840 tokens in 0:") and summary.endswith(f"; {run}")
    assert res.stderr == ""  # torchrun's and the workers' stderr went to train.log
    times = [r["time"] for r in rows(run, "step")]
    assert all(isinstance(t, float) for t in times) and times == sorted(times)  # wall clock in every metrics row
    state = json.loads((run / "state.json").read_text())
    assert (state["state"], state["step"], state["exit_code"], state["checkpoint"]) == \
        ("finished", 40, 0, f"checkpoints/step_{40:08d}")
    assert state["command"][:2] == ["mupctl", "train"] and state["mupctl_version"] == mupctl.__version__
    for name in ("recipe.yaml", "plan.json", "metrics.jsonl", "train.log"):
        assert (run / name).is_file()
    assert f"-m mupctl.worker --run-dir {run}" in res.stdout  # the launcher's argv names the run directory
    plan = json.loads((run / "plan.json").read_text())
    assert plan["train"]["steps"] == 40 and "argv" not in plan["launch"]


def test_train_json_prints_one_object_at_the_end(runs):
    """`train --json`: nothing while it runs, then the run's status as one JSON object (stdout parses)."""
    run, res = runs["ddp2"]
    got = json.loads(res.stdout)
    assert got["run_dir"] == str(run) and got["state"] == "finished" and got["step"] == 6 and got["alive"] is False
    assert got["loss"] == rows(run)[-1]["loss"] and got["tokens"] == 6 * 8 * 64
    assert got["val_loss"] is None and got["checkpoint"] is None  # train.eval_interval 0, checkpoint.interval 0
    assert got["exit_code"] == 0 and got["seconds"] > 0
    assert "step 6  loss" in (run / "train.log").read_text() and res.stderr == ""


@pytest.mark.parametrize("two", ["ddp2", "fsdp2"])
def test_two_ranks_match_one_rank(runs, two):
    """Same global batch, fp32: 2 gloo ranks (DDP or FSDP2) follow the 1-process trajectory."""
    one, other = losses(runs["one"][0]), losses(runs[two][0])
    assert len(one) == len(other) == 6
    assert other == pytest.approx(one, rel=2e-5, abs=1e-6)
    assert one[-1] < one[0]


def test_fsdp_compiled_pieces_follow_eager(runs):
    """train.compile under FSDP2 compiles each block and the head's loss on its own
    (GPT.compile_pieces); 2 gloo ranks then follow the eager trajectory."""
    assert losses(runs["fsdp2-compiled"][0]) == pytest.approx(losses(runs["fsdp2"][0]), rel=1e-5, abs=1e-6)


def test_bf16_telemetry_under_fsdp_matches_ddp(runs):
    """Telemetry steps record every role's activation RMS under FSDP2's bf16 mixed precision, whose
    input casting copies containers (a list argument filled by the blocks came back empty), with
    activation checkpointing on; the values agree with DDP's."""
    acts = {s: [r["act_rms"] for r in rows(runs[f"bf16-{s}"][0], "act_rms")] for s in ("ddp", "fsdp")}
    assert [r.keys() for r in acts["fsdp"]] == [r.keys() for r in acts["ddp"]]
    assert len(acts["ddp"]) == 3 and {"attn_out", "mlp_out", "residual", "logits"} <= set(acts["ddp"][0])
    for ddp, fsdp in zip(acts["ddp"], acts["fsdp"]):
        assert fsdp == pytest.approx(ddp, rel=2e-2)


@pytest.mark.parametrize("recipe", ["mup", "depth_mup"])
def test_two_ranks_muon(runs, recipe):
    one, two = losses(runs[f"muon-{recipe}-one"][0]), losses(runs[f"muon-{recipe}-two"][0])
    assert two == pytest.approx(one, rel=1e-4, abs=1e-5)


def test_deterministic_mode_runs_and_says_so(runs):
    """train.deterministic switches torch's deterministic algorithms on (the CPU has no
    nondeterministic kernel in this model, so the trajectory is the default one, bit for bit)."""
    run, res = runs["deterministic"]
    assert "cpu, fp32, deterministic)" in res.stdout
    assert losses(run) == losses(runs["one"][0])


def test_wandb_offline_needs_no_network_and_keeps_its_id(runs):
    pytest.importorskip("wandb")
    run, _ = runs["one"]
    run_id = (run / "wandb_id").read_text().strip()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(run_id)


def test_two_nodes_join_one_run(runs, tmp_path):
    """Two `mupctl train` processes as two 'nodes' (c10d rendezvous on localhost) share one run dir
    and follow the same trajectory as one node with two processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "multi"
    args = [sys.executable, "-m", "mupctl", "train", "--run-dir", str(run), "--nnodes", "2", "--set",
            f"launch.rdzv_endpoint=127.0.0.1:{port}", "--set", "launch.rdzv_id=test", *SMALL]

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
    assert losses(run) == pytest.approx(losses(runs["ddp2"][0]), rel=1e-6)


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
    """The schema refuses names that could leave run.root; the launcher's own check behind it
    (`new_run_dir`) refuses a name that got past the schema, before creating anything."""
    res = cli("train", "--set", "name=../../escape", "--set", f"run.root={tmp_path}")
    assert res.returncode == 2 and "name" in res.stderr
    escaping = load_recipe(raw={"run": {"root": str(tmp_path / "root")}}).model_copy(update={"name": "../escape"})
    with pytest.raises(UserError, match="would leave"):
        new_run_dir(escaping, None)
    assert list(tmp_path.iterdir()) == []
    assert new_run_dir(load_recipe(raw={"run": {"root": str(tmp_path / "root")}}), None).parent == tmp_path / "root"


def test_tiny_recipe_is_the_embedded_default():
    """recipes/tiny.yaml spells out the embedded default: the runs they compile to are the same in
    every field (model, policy, train, schedule, data, checkpoint, logging, launch) but the name,
    and so is the recipe's one setting outside the plan (run.root)."""
    tiny, default = load_recipe(ROOT / "recipes" / "tiny.yaml"), load_recipe()
    assert changed_fields(compile_plan(default).to_json(), compile_plan(tiny).to_json()) == [("name", "run", "tiny")]
    assert tiny.run == default.run
