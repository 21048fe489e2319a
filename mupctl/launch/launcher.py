"""`mupctl train` / `mupctl resume`: validate, make the run directory, run torchrun, report.

Everything that can be checked before launch is (recipe, plan, device, data, optional packages):
invalid input raises `UserError` (exit 2) with nothing written. The run directory holds
`plan.json` (the run: the workers read it and nothing else), `recipe.yaml` (the resolved recipe, for
people), `wandb_id`, `state.json` (how the run stands: `run_state`), and what the workers write
(`metrics.jsonl`, `train.log`, `events.jsonl`, `checkpoints/`). torchrun is started as an argv list
(never a shell) derived from the plan and supervised by `supervise`; its `--max-restarts` restarts
failed workers, which resume from the latest checkpoint on their own.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from mupctl.errors import UserError, warn
from mupctl.launch.display import Display
from mupctl.launch.extend import check_extension
from mupctl.launch.preflight import preflight
from mupctl.launch.supervise import run_workers
from mupctl.paths import atomic_write, check_dir
from mupctl.plan import PLAN_VERSION, Plan, compile_plan, plan_changes, read_plan, write_plan
from mupctl.recipe import load_recipe, recipe_to_yaml


def new_run_dir(recipe, run_dir: Path | None) -> Path:
    """`runs/<name>-<timestamp>` under `run.root`, or the given directory if it holds no run yet."""
    if run_dir is None:
        root = check_dir(Path(recipe.run.root), "run.root").resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = root / f"{recipe.name}-{stamp}"
        if not run_dir.resolve().is_relative_to(root):  # the schema already restricts names; belt and braces
            raise UserError(f"run directory would leave {root}, got {recipe.name!r}", "name")
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = root / f"{recipe.name}-{stamp}-{n}"
    check_dir(run_dir, "--run-dir")
    if (run_dir / "plan.json").exists():
        raise UserError(f"{run_dir} already holds a run; continue it with `mupctl resume {run_dir}` or pick "
                        "another --run-dir", "--run-dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} exists and is not a directory", "--run-dir")
    return run_dir


def joins_multinode_run(run_dir: Path, recipe) -> bool:
    """Every node of a multi-node job runs `mupctl train … --run-dir SHARED`: the first one creates
    the run, the others join it when its recipe is exactly theirs."""
    if recipe.launch.nnodes == 1 or not (run_dir / "plan.json").is_file():  # plan.json is written last
        return False
    return load_recipe(run_dir / "recipe.yaml").model_dump() == recipe.model_dump()


def read_run_json(path: Path, key: str | None = None):
    """A JSON file of a run directory (DIVERGED.json); damage is a one-line `UserError`."""
    try:
        data = json.loads(path.read_text())
        return data if key is None else data[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}); restore it, or start a new run with "
                        "`mupctl train`", "RUN_DIR") from None


def read_run_plan(path: Path) -> Plan:
    """A run's plan.json; damage, or a plan of another format version, is a one-line `UserError`."""
    try:
        return read_plan(path)
    except (OSError, ValueError) as exc:
        version = read_run_json(path, "version") if isinstance(exc, ValueError) else None
        if isinstance(version, int) and version != PLAN_VERSION:
            raise UserError(f"{path} is a version-{version} plan and this mupctl reads version {PLAN_VERSION}; "
                            "resume the run with the mupctl that started it, or start a new run", "RUN_DIR") \
                from None
        raise UserError(f"{path} is damaged ({type(exc).__name__}); restore it, or start a new run with "
                        "`mupctl train`", "RUN_DIR") from None


def lock_run_dir(run_dir: Path, recipe, sign: bool = True) -> object:
    """An exclusive lock on a single-node run directory, held by this process until it exits, so
    that two `mupctl resume` (or a resume and a live run) never write into one run at once. The OS
    drops it when the process dies, even by SIGKILL. Multi-node runs share one directory between
    several launchers by design (`joins_multinode_run`) and take no lock. `sign`: write this
    process into it (`sign_lock`) at once."""
    import fcntl
    if recipe.launch.nnodes > 1:
        return None
    f = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UserError(f"{run_dir} is in use by {holder}; wait for it to finish (or stop it) first", "RUN_DIR") \
            from None
    if sign:
        sign_lock(f)
    return f


def sign_lock(f) -> None:
    """Write `mupctl pid N` into a held run lock (what `in use by …` and `mupctl status` read)."""
    if f is not None:
        f.seek(0)
        f.truncate()
        f.write(f"mupctl pid {os.getpid()}\n")
        f.flush()


def write_run_files(run_dir: Path, recipe, plan: Plan) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    write_plan(run_dir / "plan.json", plan)
    if not (run_dir / "wandb_id").exists():
        atomic_write(run_dir / "wandb_id", uuid.uuid4().hex[:12] + "\n")


def cli_overrides(nproc_per_node=None, nnodes=None, max_restarts=None) -> list[str]:
    flags = {"launch.nproc_per_node": nproc_per_node, "launch.nnodes": nnodes, "launch.max_restarts": max_restarts}
    return [f"{k}={v}" for k, v in flags.items() if v is not None]


def train(recipe_path: Path | None, overrides: list[str], use_mup: bool = False, run_dir: Path | None = None,
          command: list[str] = (), quiet: bool = False, **flags) -> dict:
    """Make the run (or join a multi-node one) and run it; the run's status when the workers ended
    (`supervise.run_workers`). `quiet`: nothing on stdout (--json)."""
    recipe = load_recipe(recipe_path, list(overrides) + cli_overrides(**flags), use_mup=use_mup)
    plan = compile_plan(recipe)  # invalid combinations fail before anything is written
    warn(plan.warnings)
    preflight(recipe)
    joining = run_dir is not None and joins_multinode_run(Path(run_dir), recipe)
    if joining:
        run_dir = Path(run_dir).resolve()
        plan = read_run_plan(run_dir / "plan.json")
    else:
        run_dir = new_run_dir(recipe, run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_run_dir(run_dir, recipe)  # noqa: F841 - held until this process exits
        write_run_files(run_dir, recipe, plan)
    display = Display(run_dir, plan.train.steps, quiet)
    if joining:
        display.note(f"mupctl: joining the {recipe.launch.nnodes}-node run in {run_dir}")
    display.note(f"mupctl: run directory {run_dir} (plan {plan.hash})")
    return run_workers(run_dir, plan, command, display, owner=not joining)


def check_checkpoints(ckpt_dir: Path) -> int | None:
    """Before a resume launches: when step_* checkpoints exist, at least one must pass
    `checkpoint.file_problem` (the workers fall back past the others on their own). Returns the step of
    the newest that passes (the one the resume continues from), None without any."""
    from mupctl.checkpoint import readable_steps
    good, bad = readable_steps(ckpt_dir)
    if bad and not good:
        raise UserError(f"no readable checkpoint in {ckpt_dir} ({'; '.join(bad[-3:])}); restore them, or move "
                        "the step_* directories away to restart the run from step 0", "RUN_DIR")
    return max(good, default=None)


# What the launcher and the workers write in a run directory, and whether it is a directory: an entry of
# the other kind is damage (a resume would fail at it, or start afresh over the run).
RUN_ENTRIES = {"checkpoints": True, "metrics.jsonl": False, "events.jsonl": False, "wandb_id": False,
               ".lock": False, "DIVERGED.json": False, "state.json": False}


def shown(value, limit: int = 80) -> str:
    """repr(value), cut past `limit` characters (a changed tensor list is long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " …" + text[-2:]


def resume(run_dir: Path, overrides: list[str], force: bool = False, command: list[str] = (), quiet: bool = False,
           **flags) -> dict:
    """Relaunch a run from its newest valid checkpoint. The new plan is compiled from `recipe.yaml`
    (as it is now) plus `overrides` and compared with the run's `plan.json`: a difference outside
    `plan.RESUMABLE` breaks exact resume and is refused (exit 2, naming the field) unless `force`.
    A hand edit of `recipe.yaml` is found the same way (its plan against `plan.json`) and named as
    such. `train.steps` must lie past the newest checkpoint; a run already finished at it is reported
    (the status gets a `note`) and nothing is launched (`extend.check_extension`). Only then is anything
    written: `plan.json` when the plan changed, `recipe.yaml` when the overrides changed it (a plain
    resume keeps its comments). Returns the run's status when the workers ended."""
    run_dir = check_dir(Path(run_dir), "RUN_DIR").resolve()  # also: the run directory is writable
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / "plan.json").is_file():
        raise UserError(f"{run_dir} is not a mupctl run directory (no recipe.yaml/plan.json)", "RUN_DIR")
    saved = read_run_plan(run_dir / "plan.json")
    written = load_recipe(run_dir / "recipe.yaml")
    _, edited = plan_changes(saved, compile_plan(written))
    if edited and not force:
        field, a, b = edited[0]
        raise UserError(f"recipe.yaml was edited after the run started ({shown(a)} -> {shown(b)}), which breaks "
                        "exact resume; restore it, or pass --force to accept the change", field)
    recipe = load_recipe(run_dir / "recipe.yaml", list(overrides) + cli_overrides(**flags))
    plan = compile_plan(recipe)
    allowed, breaking = plan_changes(saved, plan)
    if breaking and not force:
        field, a, b = breaking[0]
        raise UserError(f"changed from {shown(a)} to {shown(b)}; this breaks exact resume (pass --force to "
                        "continue anyway)", field)
    preflight(recipe)
    for name, is_dir in RUN_ENTRIES.items():
        if (run_dir / name).exists() and (run_dir / name).is_dir() != is_dir:
            raise UserError(f"{run_dir / name} is a {'file' if is_dir else 'directory'}, not the run's "
                            f"{'directory' if is_dir else 'file'}; restore it or move it away", "RUN_DIR")
    ckpt = check_checkpoints(run_dir / "checkpoints")
    lock = lock_run_dir(run_dir, recipe, sign=False)  # a run in use is refused before anything is said of it
    done, notes = check_extension(run_dir, saved, plan, recipe.optimizer.lr, ckpt)
    if done is not None:
        return done
    warn(notes)
    diverged = run_dir / "DIVERGED.json"
    why = read_run_json(diverged, "message") if diverged.exists() else None
    sign_lock(lock)  # held until this process exits
    display = Display(run_dir, plan.train.steps, quiet)
    if why is not None:  # an explicit resume is the user's decision to try again
        display.note(f"mupctl: note: {why}; resuming from the newest checkpoint anyway")
        os.replace(diverged, run_dir / "DIVERGED.prev.json")
    for field, a, b in allowed + breaking:
        display.note(f"mupctl: resume changes {field}: {shown(a)} -> {shown(b)}")
    if recipe != written:
        atomic_write(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    if allowed or breaking:
        write_plan(run_dir / "plan.json", plan)
    return run_workers(run_dir, plan, command, display, checkpoint=ckpt)
