"""What a resume would continue, checked before it launches: a `train.steps` at or below the newest checkpoint
(or the finished run's step) is refused, a run that already reached its `train.steps` is reported and not
relaunched, and a longer run that stretches an annealed schedule is warned about."""

from __future__ import annotations

from pathlib import Path

from mupctl.errors import UserError
from mupctl.run_state import FINISHED
from mupctl.schedule import lr_factor


def check_extension(run_dir: Path, saved, plan, peak_lr: float, ckpt: int | None) -> tuple[dict | None, list[str]]:
    """(`done`, notes): `done` is the status of a run with nothing left to train, with a `note` saying so
    (launch nothing), else None; notes are warnings for stderr. `saved` is the run's plan, `plan` the
    resume's, `ckpt` the step of the newest valid checkpoint (`launcher.check_checkpoints`) or None.

    The resume continues from the newest valid checkpoint, or from step 0 without one. It has nothing to do
    when that is where the run finished (`state.json`, or for old runs metrics.jsonl) and train.steps asks
    for no more; a train.steps at or below the step it would continue from (or below the finished step of
    a run without checkpoints, which a resume would train over) is refused, naming train.steps."""
    from mupctl.status import run_status
    status = run_status(run_dir, checkpoint=ckpt)
    finished = status["step"] if status["state"] == FINISHED else None
    steps = plan.train.steps
    if finished is not None and steps == finished and ckpt in (None, finished):
        return status | {"note": f"already finished at step {finished}; extend with `mupctl resume {run_dir} --set "
                                 f"train.steps={2 * finished}` (any number above {finished})"}, []
    if ckpt is not None and steps <= ckpt:
        raise UserError(f"is {steps}, but the newest checkpoint is at step {ckpt}: a resume continues from there, "
                        f"so give train.steps > {ckpt}", "train.steps")
    if ckpt is None and finished is not None and steps < finished:
        raise UserError(f"is {steps}, but the run finished at step {finished} without a checkpoint: a resume "
                        f"would train it over; give train.steps > {finished}", "train.steps")
    if ckpt is None:
        return None, ["no checkpoint: a resume starts over from step 0"] if status["step"] else []
    jump = schedule_jump(saved, plan, ckpt, peak_lr)
    return None, [jump] if jump else []


def schedule_jump(saved, plan, step: int, peak_lr: float) -> str | None:
    """The warning when the resume's schedule sets a higher LR for the next update (index `step`) than the
    run's own schedule set for the last one: a longer cosine/linear run jumps back up from its floor."""
    old, new = saved.schedule.model_dump(), plan.schedule.model_dump()
    if old == new or step == 0:
        return None
    before, after = lr_factor(step - 1, **old), lr_factor(step, **new)
    if after <= before * 1.02:
        return None
    floor = " (its floor)" if before <= old["min_lr_ratio"] + 1e-12 else ""
    if new["name"] == "wsd":
        clean = ("a WSD run extends cleanly only from a checkpoint taken before its decay began; resume from one, "
                 "or accept the jump")
    else:
        clean = ("WSD (schedule.name: wsd) is the schedule that extends cleanly: its LR stays at the peak until the "
                 "final decay, so a checkpoint from before the decay continues on the same curve")
    return (f"train.steps {saved.train.steps} -> {plan.train.steps} stretches the {new['name']} schedule: the LR "
            f"jumps from {before:.2f}x its peak{floor}, {before * peak_lr:.1e} at step {step}, back up to "
            f"{after:.2f}x, {after * peak_lr:.1e} at step {step + 1} (optimizer.lr {peak_lr:g}); {clean}")
