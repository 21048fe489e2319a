"""A run's trained weights, read in one process (`mupctl export`, `mupctl eval`).

`load_run(run_dir, step)` returns the run's plan (`RUN_DIR/plan.json`) and the model tensors of one
checkpoint, full fp32 tensors on the CPU keyed by the plan's tensor names. They are read with
`torch.distributed.checkpoint.load(..., no_dist=True)` into empty tensors of the plan's shapes, so no
process group is needed and a checkpoint saved by any world size and strategy (DDP shards of full
tensors, FSDP2 DTensor shards) loads: DCP reshards on read. Only the `model.*` entries are read; the
optimizer state stays on disk.

Which checkpoint: `step` when given (a damaged or missing one is a `UserError` naming `--step`), else
the newest that passes `checkpoint.file_problem` and loads; a damaged one is skipped with the same
warning `resume` prints (`warning: checkpoint step_… is unreadable (…); falling back to step_…`).
A checkpoint saved under another plan (a forced resume changed the parameterization since) counts
as unusable: the multipliers in plan.json are not the ones its weights were trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

from mupctl.checkpoint import _quiet, _reason, fallback_warning, file_problem, step_dirs
from mupctl.errors import UserError
from mupctl.plan import Plan


@dataclass(frozen=True)
class RunWeights:
    plan: Plan
    step: int
    path: Path                        # the checkpoint directory
    state: dict[str, torch.Tensor]    # plan tensor name -> fp32 CPU tensor


def run_plan(run_dir: Path) -> Plan:
    """RUN_DIR's plan.json (a `UserError` naming RUN_DIR when it is missing or damaged)."""
    from mupctl.launch.launcher import read_run_plan
    if not run_dir.is_dir() or not (run_dir / "plan.json").is_file():
        raise UserError(f"{run_dir} is not a mupctl run directory (no plan.json)", "RUN_DIR")
    return read_run_plan(run_dir / "plan.json")


def read_model_state(plan: Plan, path: Path) -> dict[str, torch.Tensor]:
    """The model tensors of checkpoint dir `path`, full and fp32 on the CPU, in one process."""
    state = {t.name: torch.empty(t.shape, dtype=torch.float32) for t in plan.tensors}
    with _quiet():
        dcp.load({"model": state}, checkpoint_id=str(path), no_dist=True)
    return state


def _plan_problem(path: Path, plan: Plan) -> str | None:
    saved = json.loads((path / "meta.json").read_text()).get("plan_hash")
    if saved is not None and saved != plan.hash:
        return (f"checkpoint {path.name} was saved under plan {saved} and plan.json is plan {plan.hash} (a forced "
                "resume changed the parameterization): its weights do not go with plan.json's multipliers")
    return None


def _try_load(plan: Plan, step: int, path: Path) -> RunWeights | str:
    """The weights of checkpoint `path`, or what makes it unusable."""
    problem = file_problem(path) or _plan_problem(path, plan)
    if problem:
        return problem
    try:
        return RunWeights(plan, step, path, read_model_state(plan, path))
    except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException
        return _reason(e)


def load_run(run_dir: Path, step: int | None = None, plan: Plan | None = None) -> RunWeights:
    """The plan and the weights of checkpoint `step` (default: the newest readable one) of a run."""
    run_dir = Path(run_dir)
    plan = plan or run_plan(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    found = dict(step_dirs(ckpt_dir))
    if step is not None:
        if step not in found:
            have = ", ".join(map(str, sorted(found))) or "none"
            raise UserError(f"{ckpt_dir} has no checkpoint of step {step} (steps: {have})", "--step")
        got = _try_load(plan, step, found[step])
        if isinstance(got, str):
            raise UserError(f"checkpoint {found[step].name} is unusable ({got}); choose another step", "--step")
        return got
    if not found:
        raise UserError(f"{ckpt_dir} holds no checkpoint yet (checkpoint.interval: 0, or the run stopped before "
                        "its first one)", "RUN_DIR")
    newest_first = sorted(found.items(), reverse=True)
    for i, (s, path) in enumerate(newest_first):
        got = _try_load(plan, s, path)
        if not isinstance(got, str):
            return got
        fallback_warning(path.name, got, [p.name for _, p in newest_first[i + 1:]])
    raise UserError(f"no readable checkpoint in {ckpt_dir} (tried {', '.join(p.name for _, p in newest_first)})",
                    "RUN_DIR")
