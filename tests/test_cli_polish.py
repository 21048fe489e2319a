"""The command line as people and agents meet it: help text, --version and -h, `validate --json` on a
bad recipe, `init`'s default, and what `train` shows on a terminal (a real run under a pseudo-terminal)."""

import json
import os
import pty
import re
import select
import subprocess
import sys

from typer.main import get_command

from conftest import ROOT, invoke
from mupctl import __version__
from mupctl.cli import app


def leaf_commands(group, prefix=""):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from leaf_commands(cmd, f"{prefix}{name} ")
        else:
            yield prefix + name, cmd


def test_help_shows_flags_as_flags_arguments_in_capitals_and_help_everywhere():
    for path, cmd in leaf_commands(get_command(app)):
        res = invoke(*path.split(), "--help")
        assert res.returncode == 0, res.stderr
        usage = res.stdout.splitlines()[0]
        assert "{" not in usage and "<bool>" not in res.stdout, res.stdout
        for param in cmd.params:
            assert param.help, f"{path} {param.opts or param.name}: no help text"
            if param.param_type_name == "argument":
                assert param.metavar == param.name.upper() and param.metavar in usage, usage
    resume = invoke("resume", "-h").stdout
    assert resume.startswith("Usage: ") and resume.splitlines()[0].endswith("resume [OPTIONS] RUN_DIR")
    assert re.search(r"^  --force +accept changes", resume, re.M)
    assert re.search(r"^  --json +print nothing", resume, re.M)
    assert invoke("train", "-h").stdout.splitlines()[0].endswith("train [OPTIONS] [RECIPE]")


def test_version_and_short_help():
    res = invoke("--version")
    assert res.returncode == 0 and res.stdout == f"mupctl {__version__}\n"
    res = invoke("-h")
    assert res.returncode == 0 and "status" in res.stdout and "--version" in res.stdout


def test_validate_json_on_a_bad_recipe_says_which_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {lr: -1}\n")
    res = invoke("validate", bad, "--json")
    assert res.returncode == 2 and res.stderr.strip() == "error: optimizer.lr: must be > 0, got -1"
    assert json.loads(res.stdout) == {"valid": False, "field": "optimizer.lr", "error": "must be > 0, got -1"}
    bad.write_text("model: [1, 2\n")  # an error of the file itself: its path is the field
    out = json.loads(invoke("validate", bad, "--json").stdout)
    assert out["valid"] is False and out["field"] == str(bad) and out["error"].startswith("invalid YAML")


def test_init_defaults_to_the_tiny_template_and_says_how_big_it_is(tmp_path):
    res = invoke("init", "myrun", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "myrun.yaml").read_text()
    assert "d_model: 128" in text  # tiny's width
    assert res.stdout.startswith("wrote myrun.yaml: template tiny, 590,464 parameters, 200 steps of 4,096 tokens")


def read_pty(argv, timeout=300):
    """Run argv with stdout and stderr on a pseudo-terminal (80 columns); (exit code, everything it printed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT,
                            env=dict(os.environ, COLUMNS="100", TERM="xterm"))
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def test_train_on_a_terminal_keeps_metric_lines_above_a_bar_and_ends_with_a_summary(tmp_path):
    run = tmp_path / "run"
    code, out = read_pty([sys.executable, "-m", "mupctl", "train", "--run-dir", str(run), "--set", "train.steps=6",
                          "--set", "model.seq_len=64", "--set", "train.global_batch=8", "--set", "train.micro_batch=8",
                          "--set", "train.log_interval=1", "--set", "train.eval_interval=3", "--set",
                          "checkpoint.interval=0", "--set", "train.telemetry_interval=0", "--set", "launch.device=cpu"])
    assert code == 0, out
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "\n")
    lines = [line.rstrip() for line in screen.splitlines()]
    for step in range(1, 7):  # every metric line stays on screen, train and val alike
        assert any(line.startswith(f"step {step}  loss ") for line in lines), step
    assert any(line.startswith("step 3  val_loss ") for line in lines)
    bars = [line for line in lines if line.startswith("train ") and "/6" in line]
    assert bars and any(" 6/6 " in bar for bar in bars), bars
    assert all("loss" in bar and "val" in bar for bar in bars)  # both losses side by side, neither replaces the other
    assert len({bar.index("/6") for bar in bars}) == 1  # a steady bar: its fields do not move
    summary = [line for line in lines if line.startswith("mupctl: finished at step 6/6: loss ")]
    assert summary and ", 3,072 tokens in 0:00:" in summary[-1] and summary[-1].endswith(f"; {run}")
    assert "Traceback" not in out
