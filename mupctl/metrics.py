"""Run logging on rank 0: `metrics.jsonl` (always), plain lines on stdout and in train.log, wandb.

Row kinds in metrics.jsonl (one JSON object per line, each with `time`, Unix seconds when written):
- train:     step, loss, lr, tokens, tokens_per_s, mfu, grad_norm
- val:       step, val_loss
- telemetry: step, act_rms {key: rms}, update_ratio {role: rms(ΔW)/rms(W)}
- checkpoint: step, checkpoint_blocked_s (seconds the training loop waited for the save)
`step` counts completed optimizer steps. On resume the rows after the checkpoint's step are
dropped first, so the file reads as if the run had never stopped. The stdout lines (`format_row`,
read back by `parse_line`) go to the launcher, which shows them (launch.display).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

from mupctl.paths import atomic_write


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(line, row) for every line that holds a JSON object. A line torn by a crash mid-write (or
    any other unreadable line) is skipped; [] when the file does not exist."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append((line, row))
    return out


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (metrics.jsonl, events.jsonl), unreadable lines skipped."""
    return [row for _, row in _rows(path)]


def truncate_metrics(path: Path, keep_through_step: int) -> list[dict]:
    """Drop rows with step > keep_through_step, torn lines and rows without an integer step (atomic
    rewrite); the kept rows."""
    if not path.exists():
        return []
    kept = [(line, row) for line, row in _rows(path)
            if type(row.get("step")) is int and row["step"] <= keep_through_step]
    atomic_write(path, "".join(line + "\n" for line, _ in kept))
    return [row for _, row in kept]


class Throughput:
    """tokens/s of each log window, timed on its own. The window opens (`start`) once the previous
    log step's bookkeeping is done and closes (`tokens_per_s`) at the next log step, with the device
    synchronized (`sync`) at both ends: its time is its own steps' work, not work queued before it
    opened, nor logging, evaluation or checkpoints (those inside a window are `paused` out of it).

        tokens/s = (steps since start) · tokens_per_step / (wall time − paused time)
    """

    def __init__(self, tokens_per_step: int, sync: Callable[[], None]):
        self.tokens_per_step, self.sync = tokens_per_step, sync

    def start(self, step: int) -> None:
        self.sync()
        self.step0, self.t0, self.excluded = step, time.perf_counter(), 0.0

    def tokens_per_s(self, step: int) -> float:
        self.sync()
        return (step - self.step0) * self.tokens_per_step / (time.perf_counter() - self.t0 - self.excluded)

    @contextlib.contextmanager
    def paused(self):
        self.sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.excluded += time.perf_counter() - t


def format_row(row: dict) -> str:
    """The plain line of a row: `step 40  loss 2.1142  lr 3.00e-04  …` (two spaces between fields)."""
    parts = [f"step {row['step']}"]
    for key, fmt in (("loss", "{:.4f}"), ("val_loss", "{:.4f}"), ("lr", "{:.2e}"), ("grad_norm", "{:.3f}"),
                     ("tokens_per_s", "{:,.0f}"), ("mfu", "{:.1%}"),
                     ("checkpoint_blocked_s", "{:.2f}s")):
        if row.get(key) is not None:
            parts.append(f"{key} " + fmt.format(row[key]))
    if "act_rms" in row:
        parts.append("act_rms " + " ".join(f"{k}={v:.3g}" for k, v in row["act_rms"].items()))
        parts.append("update_ratio " + " ".join(f"{k}={v:.2e}" for k, v in row["update_ratio"].items()))
    return "  ".join(parts)


def parse_line(line: str) -> dict | None:
    """{"step": N, field: its text, …} of a `format_row` line, or None for any other line."""
    head, *fields = line.split("  ")
    name, _, step = head.partition(" ")
    if name != "step" or not step.isdigit():
        return None
    return {"step": int(step)} | {k: v for k, _, v in (f.partition(" ") for f in fields) if k}


class MetricsLog:
    """Writes rows on rank 0; other ranks hold a no-op instance."""

    def __init__(self, run_dir: Path, enabled: bool, total_steps: int, wandb_cfg=None, wandb_id: str | None = None,
                 config: dict | None = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.log_path = run_dir / "train.log"
        self.total = total_steps
        self.wandb = None
        if not enabled:
            return
        if wandb_cfg is not None and wandb_cfg.wandb != "disabled":
            import wandb
            self.wandb = wandb.init(project=wandb_cfg.project, entity=wandb_cfg.entity, id=wandb_id,
                                    resume="allow", mode=wandb_cfg.wandb, dir=str(run_dir), config=config)

    def say(self, message: str) -> None:
        """A line for people and agents (stdout and train.log)."""
        if not self.enabled:
            return
        _print(message)
        with self.log_path.open("a") as f:
            f.write(message + "\n")

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row | {"time": time.time()}) + "\n")
        line = format_row(row)
        with self.log_path.open("a") as f:
            f.write(line + "\n")
        _print(line)
        if self.wandb is not None:
            flat = {k: v for k, v in row.items() if not isinstance(v, dict) and k != "step"}
            for group in ("act_rms", "update_ratio"):
                flat |= {f"{group}/{k}": v for k, v in row.get(group, {}).items()}
            self.wandb.log(flat, step=row["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def _print(line: str) -> None:
    """A line to the launcher. A broken pipe means the launcher died: the worker is about to follow it
    (`die_with_parent`), and its last words must not be cut short by this write."""
    with contextlib.suppress(BrokenPipeError):
        print(line, flush=True)
