"""Progress of `data prepare` on stderr: a rich bar (share of the input bytes read, tokens, tokens/s,
time left) on a terminal, otherwise one plain line every `interval` seconds:

    prepare: 41% of 212.0 MB read, 86,991,104 tokens, 30,112,845 tokens/s
"""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    def __init__(self, total_bytes: int, stream: IO | None = None, interval: float = 10.0,
                 terminal: bool | None = None):
        from rich.console import Console
        self.console = Console(file=stream or sys.stderr, force_terminal=terminal)
        self.total, self.interval = max(1, total_bytes), interval
        self.done = self.tokens = 0
        self.start = self.last = time.perf_counter()
        self.bar = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeRemainingColumn
            self.bar = Bar(TextColumn("prepare"), BarColumn(bar_width=20), TaskProgressColumn(),
                           TextColumn("{task.fields[tokens]:,} tokens {task.fields[rate]:,.0f} tokens/s"),
                           TimeRemainingColumn(), console=self.console)
            self.task = self.bar.add_task("prepare", total=self.total, tokens=0, rate=0.0)

    def rate(self) -> float:
        """Tokens per second so far."""
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)

    def advance(self, nbytes: int, ntokens: int) -> None:
        self.done += nbytes
        self.tokens += ntokens
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, tokens=self.tokens, rate=self.rate())
        elif time.perf_counter() - self.last >= self.interval:
            self.last = time.perf_counter()
            self.line()

    def line(self) -> None:
        print(f"prepare: {100 * self.done / self.total:.0f}% of {self.total / 1e6:.1f} MB read, "
              f"{self.tokens:,} tokens, {self.rate():,.0f} tokens/s", file=self.console.file, flush=True)

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif exc[0] is None and time.perf_counter() - self.start >= self.interval:
            self.line()  # a long plain run ends with its totals
