"""An ordered, bounded parallel map over worker processes (the tokenizing pool of `data prepare`).

`OrderedPool(workers, init, args).imap(fn, items)` yields fn(item) in the order of `items`, with at
most `depth` items handed out at a time, so a fast reader cannot queue a whole corpus in memory and
the output does not depend on the number of workers. Workers are forked (the parent's `__main__`
is not re-imported, as spawn would) and ignore SIGINT: Ctrl-C reaches the parent, which terminates
them. `workers == 1` runs everything in this process, with no pool at all.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections import deque
from typing import Callable, Iterable, Iterator


def _init_worker(init: Callable, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init(*args)


class OrderedPool:
    def __init__(self, workers: int, init: Callable, args: tuple = ()):
        self.workers = workers
        self.pool = None
        if workers > 1:
            self.pool = mp.get_context("fork").Pool(workers, _init_worker, (init, args))
        else:
            init(*args)

    def imap(self, fn: Callable, items: Iterable, depth: int | None = None) -> Iterator:
        if self.pool is None:
            yield from map(fn, items)
            return
        pending: deque = deque()
        for item in items:
            pending.append(self.pool.apply_async(fn, (item,)))
            if len(pending) >= (depth or 2 * self.workers):
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
