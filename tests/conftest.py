"""How tests run mupctl: `invoke` in this process (Typer's CliRunner against `mupctl.cli.app`, the
same entry point and error handling as the `mupctl` script, without a new interpreter), `run_cli`
in a subprocess (for what needs its own process: signals, kills, a clean environment), and
`run_many` for independent subprocess runs at once (a 2-core machine runs two start-ups at a time)."""

import gc
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mupctl.cli import app

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")
PARALLEL = 2  # subprocess runs at a time in run_many


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `python -m mupctl ARGS` in a real subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "mupctl", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env, timeout=timeout)


def run_many(jobs: dict, parallel: int = PARALLEL) -> dict:
    """{name: CompletedProcess} of `run_cli(*args)` for {name: args}, `parallel` at a time."""
    with ThreadPoolExecutor(parallel) as pool:
        futures = {name: pool.submit(run_cli, *args) for name, args in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def invoke(*args, cwd=None, env=None):
    """Run `mupctl ARGS` in this process (cwd `cwd`, default the repository; `env`: variables to set,
    None to unset); returns an object with returncode, stdout and stderr like run_cli's. A command
    that starts torchrun still does so (the launcher shows its workers' lines on stdout, as in a shell)."""
    old = os.getcwd()
    os.chdir(cwd or ROOT)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    finally:
        os.chdir(old)
    out = SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)
    if result.exception is not None and not isinstance(result.exception, SystemExit):  # escaped Mupctl.main
        raise AssertionError(f"mupctl {' '.join(map(str, args))} raised") from result.exception
    if result.exit_code == 1:  # a failed run's frames hold its run directory lock (in a cycle): free them
        del result
        gc.collect()
    return out


@pytest.fixture
def cli():
    return invoke
