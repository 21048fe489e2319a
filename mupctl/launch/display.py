"""What `mupctl train` / `resume` show while the workers run.

The workers always write plain lines to a pipe (and to train.log themselves); the launcher shows them:
- on a terminal, each line above one steady rich progress bar (step/total, the latest train loss and val
  loss side by side in fixed-width fields, elapsed time, time left);
- otherwise (a pipe, an agent), the same plain lines, one per row;
- with `--json`, nothing: stdout carries the one JSON object at the end (train.log has the lines).
torchrun's own output (its logs, tracebacks) and the workers' stderr go to train.log only; a `warning: `
line among them (a checkpoint skipped on load) is also shown on stderr.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import IO, Callable

from mupctl.metrics import parse_line


def _num(value: float | None) -> str:
    return "      —" if value is None else f"{value:7.4f}"


class Display:
    def __init__(self, run_dir: Path, total_steps: int, quiet: bool = False):
        self.log_path, self.quiet, self.total = Path(run_dir) / "train.log", quiet, total_steps
        self.loss = self.val_loss = None
        self.progress = None
        self.lock = threading.Lock()

    def start(self) -> None:
        """Show the progress bar from now on (on a terminal)."""
        if not self.quiet and sys.stdout.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(bar_width=30), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                     TimeRemainingColumn(), console=Console(file=sys.stdout), refresh_per_second=4)
            self.task = self.progress.add_task("train", total=self.total, info=self._info())
            self.progress.start()

    def _info(self) -> str:
        return f"loss {_num(self.loss)}  val {_num(self.val_loss)}"

    def show(self, line: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)

    def note(self, line: str) -> None:
        """A line of the launcher's own: shown, and kept in train.log."""
        with self.lock:
            self.show(line)
            with self.log_path.open("a") as f:
                f.write(line + "\n")

    def worker_line(self, line: str) -> None:
        """A line the workers printed (and wrote to train.log themselves): shown; a metrics line moves the bar."""
        with self.lock:
            self.show(line)
            row = parse_line(line)
            if row is None or self.progress is None:
                return
            self.loss = _float(row.get("loss"), self.loss)
            self.val_loss = _float(row.get("val_loss"), self.val_loss)
            self.progress.update(self.task, completed=row["step"], info=self._info())

    def torchrun_line(self, line: str) -> None:
        """A line of torchrun's stderr (its own, or a worker's): train.log; warnings also to stderr."""
        with self.lock:
            with self.log_path.open("a") as f:
                f.write(line + "\n")
            if line.startswith("warning: "):
                print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _float(text: str | None, default: float | None) -> float | None:
    try:
        return default if text is None else float(text)
    except ValueError:
        return default


def pump(stream: IO[str], handle: Callable[[str], None]) -> threading.Thread:
    """A thread that passes every line of `stream` (without its newline) to `handle` until EOF."""
    def run():
        for line in stream:
            handle(line.rstrip("\n"))
    thread = threading.Thread(target=run, daemon=True, name="pump")
    thread.start()
    return thread
