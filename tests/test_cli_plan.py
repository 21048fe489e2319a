"""CLI tests: plan/validate/schema/init, errors, legacy shim. In process (conftest.invoke: the
`mupctl` entry point's own error handling, without a new interpreter per command), and a few
smoke tests through a real `python -m mupctl` subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli
from mupctl.recipe import load_recipe


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def assert_one_line_error(res, *needles):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if not line.startswith("DeprecationWarning")]
    assert len(err) == 1, res.stderr
    assert err[0].count(", got ") <= 1, err[0]  # the bad value is shown once
    for n in needles:
        assert n in err[0], err[0]
    assert res.stdout == ""


def test_plan_json_has_contract_fields(cli):
    res = cli("plan", "recipes/gpt2-124m-mup.yaml", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    for key in ("recipe", "optimizer", "width_mult", "depth_mult", "roles", "multipliers", "tensors", "launch",
                "hash", "summary", "model", "train", "schedule", "data", "checkpoint", "logging", "command"):
        assert key in plan
    assert "argv" not in plan["launch"] and "resume_fields" not in plan  # the argv is the launcher's: "command"
    assert plan["train"]["global_batch"] == 128 and plan["data"] == {"source": "bin", "val_fraction": 0.05,
                                                                       "path": str(Path.cwd() / "data/owt")}
    other = cli("plan", str(Path("recipes/gpt2-124m-mup.yaml").resolve()), "--json", cwd=Path("recipes"))
    assert json.loads(other.stdout)["data"]["path"] == str(Path.cwd() / "recipes/data/owt")  # from where it runs
    assert plan["checkpoint"]["interval"] == 500 and plan["launch"]["world_size"] == 8
    assert set(plan["multipliers"]) == {"embedding", "output_logits", "attention_scale", "residual_branch"}
    for role in plan["roles"].values():
        assert {"init_std", "lr", "eps", "weight_decay"} <= set(role)
    for t in plan["tensors"]:
        assert {"name", "shape", "role", "init_std", "lr", "eps", "weight_decay", "optimizer"} <= set(t)
    assert plan["command"][1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=8" in plan["command"]
    assert plan["command"][-2:] == ["--run-dir", "<run_dir>"]
    assert plan["summary"]["params"] == 124_373_760  # GPT-2 small with vocab 50304, no biases, tied
    assert plan["width_mult"] == 3.0


def test_plan_table_and_explain(cli):
    res = cli("plan", "recipes/depth-mup.yaml", "--explain")
    assert res.returncode == 0, res.stderr
    for needle in ("hidden_out", "residual_branch", "λ^-1", "torch.distributed.run", "plan hash"):
        assert needle in res.stdout


def test_depth_mup_sgd_fails_at_plan_time(cli, tmp_path):
    r = write(tmp_path, "scaling: {recipe: depth_mup}\noptimizer: {name: sgd}\n")
    res = cli("plan", r)
    assert_one_line_error(res, "optimizer.name", "SGD", "adamw")


def test_malformed_recipes_exit_2_and_write_nothing(cli, tmp_path):
    cases = {
        "optimizer: {lr: -1}\n": ["optimizer.lr", "> 0", "-1"],
        "optimzer: {lr: 1}\n": ["optimzer", "did you mean 'optimizer'"],
        "model: {d_modle: 64}\n": ["model.d_modle", "did you mean 'd_model'"],
        "model: {d_model: 100, n_heads: 3}\n": ["model.n_heads", "divide"],
        "scaling: {recipe: mupp}\n": ["scaling.recipe", "'mup'"],
        "train: {global_batch: 10, micro_batch: 4}\n": ["train.global_batch", "multiple"],
        "model: [1, 2\n": ["invalid YAML", "line"],
        "- a\n- b\n": ["mapping"],
        "# only a comment\n": ["the recipe is empty", "mupctl init"],
        "optimizer: {lr: .inf}\n": ["optimizer.lr", "finite"],
        "train: {steps: true}\n": ["train.steps", "boolean"],
        "optimizer: {betas: [1.5, 0.9]}\n": ["optimizer.betas", "[0, 1)", "[1.5, 0.9]"],
        "train: {steps: 3, steps: 5}\n": ["duplicate key 'steps'", "line 1"],
        f"train: {{seed: {2**64}}}\n": ["train.seed", "<="],
        "model: {n_layers: 100000000000}\n": ["model.n_layers", "<="],
        "scaling: {recipe: mup, depth_alpha: 0.5}\n": ["scaling.depth_alpha", "depth_mup"],
        "use_mup: true\nscaling: 7\n": ["scaling", "mapping"],
        "use_mup: true\nmup_base_hidden_size: 64\nscaling: {base: {d_model: 32}}\n":
            ["mup_base_hidden_size", "conflicts", "scaling.base.d_model"],
        "? [1, 2]\n: x\n": ["invalid YAML", "a key must be a name"],
        "model: {d_model: " + "[" * 3000 + "]" * 3000 + "}\n": ["nested too deeply"],
        "scaling: {recipe: mup, width_mult: 1.0e+12}\n": ["scaling.width_mult", "<="],
        f"scaling: {{recipe: depth_mup, base: {{n_layers: {10**40}}}}}\n": ["scaling.base.n_layers", "<="],
        "train: {steps: 100000000}\n": ["train.steps", "<= 99999999"],
        "launch: {rdzv_endpoint: 'localhost:notaport'}\n": ["launch.rdzv_endpoint", "host:port"],
        "launch: {rdzv_backend: bogus}\n": ["launch.rdzv_backend", "'c10d'"],
        "name: " + "x" * 5000 + "\n": ["name", " … "],  # a huge bad value is cut, the line stays short
        "launch: {node_rank: 5}\n": ["launch.node_rank", "< launch.nnodes"],
        "name: !!binary aGVsbG8=\n": ["invalid YAML", "!!binary"],
        "optimizer: {lr: 1.0e+300}\n": ["optimizer.lr", "<= 1000000"],  # finite, but the plan's LRs would not be
        "scaling: {alpha_out: 1.0e+30}\n": ["scaling.alpha_out", "<= 1000000"],
        "use_mup: true\nmup_base_hidden_size: 32\nscaling: {base: 5}\n":
            ["mup_base_hidden_size", "cannot set scaling.base.d_model: scaling.base is 5, not a section"],
    }
    for text, needles in cases.items():
        before = sorted(p.name for p in tmp_path.iterdir())
        r = write(tmp_path, text)
        for cmd in ("plan", "validate", "train"):
            res = cli(cmd, r, cwd=tmp_path)
            assert_one_line_error(res, *needles)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(before) | {"r.yaml"})


def test_yaml_merge_keys_are_recipe_yaml(cli, tmp_path):
    r = write(tmp_path, "model:\n  <<: {d_model: 64, n_heads: 2}\n  n_heads: 4\n")
    res = cli("plan", r, "--json")
    assert res.returncode == 0, res.stderr
    model = json.loads(res.stdout)["model"]
    assert (model["d_model"], model["n_heads"]) == (64, 4)  # the mapping's own key wins over the merged one


def test_bad_output_paths_exit_2_and_write_nothing(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing" / "target")
    long = tmp_path / ("n" * 300)
    before = sorted(tmp_path.rglob("*"))
    text = tmp_path / "afile"
    for args, needles in (
            (("init", "x", "-t", "tiny", "--out", ""), ["--out", "is empty"]),
            (("init", "x", "-t", "tiny", "--out", tmp_path / "dangling"), ["--out", "symbolic link"]),
            (("train", "--run-dir", long), ["--run-dir", "too long"]),
            (("resume", ""), ["RUN_DIR", "is empty"]),
            (("data", "prepare", text, "--out", ""), ["--out", "is empty"]),
            (("data", "prepare", text, "--out", tmp_path / "afile" / "x"), ["--out", "is a file"]),
            (("coord-check", "recipes/tiny.yaml", "--widths", "32,64", "--out", ""), ["--out", "is empty"]),
            (("coord-check", "recipes/tiny.yaml", "--widths", "32,64", "--steps", "9" * 30, "--out", tmp_path / "c"),
             ["--steps", "2..100000"]),
            (("sweep", "recipes/tiny.yaml", "--widths", "32", "--lrs", "1e-3,2e-3", "--steps", "2", "--out", ""),
             ["--out", "is empty"]),
            (("tune", tmp_path, "--out", ""), ["--out", "is empty"]),
            (("init", "x", "-t", "tiny", "--out", f"{tmp_path}/newdir/"), ["--out", "names a directory"]),
            (("init", "x", "-t", "tiny", "--out", "/proc/x.yaml"), ["--out", "/proc is not writable"]),
            (("plan", tmp_path / ("r" * 300 + ".yaml")), ["too long"])):
        assert_one_line_error(cli(*args, cwd=ROOT), *needles)
    assert sorted(tmp_path.rglob("*")) == before


def test_unreadable_recipe_files_exit_2(cli, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_bytes(b"name: \xff\xfe bad\n")
    assert_one_line_error(cli("validate", r), "not UTF-8")
    r.write_text(f"train: {{steps: {'9' * 5000}}}\n")
    assert_one_line_error(cli("validate", r), "invalid value")
    assert_one_line_error(cli("validate", "--set", f"train.steps={'9' * 5000}"), "--set", "train.steps")


def test_usage_errors_are_one_line(cli):
    for args, needle in ((("validate", "--bogus"), "--bogus"), (("frobnicate",), "frobnicate"),
                         (("resume",), "RUN_DIR"), (("train", "--nproc-per-node", "abc"), "--nproc-per-node"),
                         (("validate", "a.yaml", "b.yaml"), "extra argument"),
                         (("plan", "--set"), "requires an argument (see `mupctl plan --help`)"),
                         (("data", "prepare", "--out"), "requires an argument (see `mupctl data prepare --help`)")):
        assert_one_line_error(cli(*args), needle)
    for bare in ((), ("data",)):  # no command: its help, as click prints it, not an "error:" line
        res = cli(*bare)
        usage = res.stderr.splitlines()[0]  # (in process the program is called `root`)
        assert res.returncode == 2 and usage.startswith("Usage: ") and usage.endswith(" [OPTIONS] COMMAND [ARGS]...")
        assert "Commands" in res.stderr and "error" not in res.stderr


def test_missing_file_and_bad_override(cli, tmp_path):
    assert_one_line_error(cli("plan", tmp_path / "nope.yaml"), "no such recipe file")
    assert_one_line_error(cli("plan", "recipes/tiny.yaml", "--set", "optimizer.lr"), "--set", "KEY=VALUE")
    assert_one_line_error(cli("plan", "recipes/tiny.yaml", "--set", "optimizer.lr=0"), "optimizer.lr")


def test_set_overrides_are_yaml_typed(cli):
    res = cli("plan", "recipes/tiny.yaml", "--json", "--set", "model.d_model=256", "--set",
              "scaling.base.d_model=64", "--set", "model.tie_embeddings=true")
    plan = json.loads(res.stdout)
    assert plan["width_mult"] == 4.0 and plan["model"]["tie_embeddings"] is True


def test_legacy_yaml_shim_warns_on_stderr_and_maps(cli):
    res = cli("plan", "recipes/legacy-use-mup.yaml", "--json")
    assert res.returncode == 0, res.stderr
    assert "DeprecationWarning" in res.stderr and "scaling.recipe: mup" in res.stderr
    plan = json.loads(res.stdout)  # stdout stays clean JSON
    assert plan["recipe"] == "mup" and plan["base"]["d_model"] == 256 and plan["width_mult"] == 2.0


def test_use_mup_flag(cli, tmp_path):
    plain = write(tmp_path, "model: {d_model: 256}\nscaling: {base: {d_model: 64}}\n", "plain.yaml")
    res = cli("plan", plain, "--use-mup", "--json")
    assert res.returncode == 0 and "--use-mup is deprecated" in res.stderr
    assert json.loads(res.stdout)["recipe"] == "mup"
    explicit_none = write(tmp_path, "scaling: {recipe: none}\n", "none.yaml")
    assert_one_line_error(cli("plan", explicit_none, "--use-mup"), "--use-mup", "conflicts")
    depth = write(tmp_path, "scaling: {recipe: depth_mup}\n", "depth.yaml")
    res = cli("validate", depth, "--use-mup", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["recipe"] == "depth_mup"
    assert "ignored" in res.stderr


def test_legacy_yaml_conflicting_with_explicit_none(cli, tmp_path):
    r = write(tmp_path, "use_mup: true\nscaling: {recipe: none}\n")
    assert_one_line_error(cli("plan", r), "use_mup", "conflicts")


def test_schema_is_json_schema(cli):
    res = cli("schema")
    schema = json.loads(res.stdout)
    assert "properties" in schema and "scaling" in schema["properties"]
    legacy = yaml.safe_load((ROOT / "recipes" / "legacy-use-mup.yaml").read_text())  # accepted, so in the schema
    assert schema["additionalProperties"] is False and set(legacy) <= set(schema["properties"])
    assert schema["properties"]["use_mup"]["deprecated"] is True


@pytest.mark.parametrize("template", ["tiny", "none", "mup", "depth_mup", "muon"])
def test_init_writes_valid_recipe(cli, tmp_path, template):
    res = cli("init", "exp1", "--template", template, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "exp1.yaml"
    assert "name: exp1" in out.read_text()
    assert cli("validate", out).returncode == 0
    again = cli("init", "exp1", "--template", template, cwd=tmp_path)
    assert_one_line_error(again, "exists", "--force")


def test_init_checks_name_and_path_before_writing(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_error(cli("init", "a: b", "-t", "tiny", cwd=tmp_path), "name")
    assert_one_line_error(cli("init", "ok\nmodel: 5", "-t", "tiny", cwd=tmp_path), "name")
    assert_one_line_error(cli("init", "ok", "-t", "tiny", "--out", tmp_path), "--out", "directory")
    assert_one_line_error(cli("init", "ok", "-t", "tiny", "--out", tmp_path / "afile" / "x.yaml"), "--out", "file")
    assert sorted(tmp_path.rglob("*")) == before
    res = cli("init", "ok", "-t", "tiny", "--out", tmp_path / "new" / "ok.yaml")
    assert res.returncode == 0 and (tmp_path / "new" / "ok.yaml").is_file()
    assert cli("init", "named.yml", "-t", "tiny", cwd=tmp_path).returncode == 0  # the file, not named.yml.yaml
    assert load_recipe(tmp_path / "named.yml").name == "named" and not (tmp_path / "named.yml.yaml").exists()
    assert_one_line_error(cli("validate", tmp_path), str(tmp_path), "is a directory")


def test_the_mupctl_process_behaves_as_in_process(tmp_path):
    """Smoke tests of the real entry point (`python -m mupctl`): JSON on stdout, one-line errors, exit 2."""
    res = run_cli("plan", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["name"] == "run", res.stderr
    bad = write(tmp_path, "optimizer: {lr: -1}\n")
    assert_one_line_error(run_cli("train", bad, cwd=tmp_path), "optimizer.lr", "> 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
    assert_one_line_error(run_cli("frobnicate"), "frobnicate", "--help")


def test_plan_never_imports_torch():
    code = ("import sys; from mupctl.cli import main; sys.argv=['mupctl','plan','recipes/tiny.yaml','--json'];\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main()\n"
            "    except SystemExit: pass\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.stdout.strip() == "False False", res.stdout + res.stderr


def test_plan_verify_realizes_and_matches(cli):
    res = cli("plan", "recipes/legacy-use-mup.yaml", "--verify", "--json", "--set", "model.n_layers=2")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["verify"] == []
    res = cli("plan", "recipes/depth-mup.yaml", "--verify", "--set", "model.n_layers=4")
    assert res.returncode == 0 and "match the plan" in res.stdout


def test_legacy_width_mult_is_resolved_by_the_compiler(cli, tmp_path):
    r = write(tmp_path, "use_mup: true\nmup_width_mult: 4\nmodel: {d_model: 256, n_heads: 4}\n")
    res = cli("plan", r, "--json")
    assert res.returncode == 0, res.stderr
    assert "scaling.width_mult" in res.stderr
    plan = json.loads(res.stdout)
    assert plan["width_mult"] == 4.0 and plan["base"]["d_model"] == 64
    r = write(tmp_path, "use_mup: true\nmup_width_mult: 3\nmodel: {d_model: 256, n_heads: 4}\n")
    assert_one_line_error(cli("plan", r), "scaling.width_mult", "whole base width")
    r = write(tmp_path, "scaling: {recipe: mup, width_mult: 2, base: {d_model: 64}}\n")
    assert_one_line_error(cli("plan", r), "scaling.width_mult", "not both")


def test_online_wandb_without_credentials_exits_2_before_launch(cli, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from mupctl.launch.preflight import wandb_credentials
    for key in [k for k in os.environ if k.startswith("WANDB_")] + ["NETRC"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    run = tmp_path / "run"
    res = cli("train", "--run-dir", run, "--set", "logging.wandb=online", "--set", "launch.device=cpu")
    assert_one_line_error(res, "logging.wandb", "wandb login", "WANDB_API_KEY")
    assert not run.exists()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_credentials()
    (tmp_path / ".netrc").write_text("machine other.example.com login user password 0123456789abcdef\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://other.example.com")
    assert wandb_credentials()
    monkeypatch.delenv("WANDB_BASE_URL")
    assert not wandb_credentials()
