"""Python's cyclic garbage collector held off while a large report is built (issue 21).

A review of a 5,000-subject trial builds about half a million small containers (an entry's parsed
values, its row, its words). None of them is part of a reference cycle: each is freed by its last
reference, as the report is answered. But the collector counts them as they are made and walks
them again and again, each younger generation many times and the whole heap a few times: measured
on the off-hours review (30,000 of 46,000 entries), 20 % of its build in a fresh worker and 40 % in
a process that already holds a large heap.

`paused()` disables the collector for the duration of a block and enables it again after the last
block that paused it ends (the threads of a worker may overlap; a collector that someone else
disabled stays disabled). What a paused block leaves in cycles is collected at the next run after
it. Only what builds many short-lived objects and few cycles is wrapped: a report's rows and its
CSV, not the PDF's layout (ReportLab's flowables refer to each other, and a long PDF is large).
The collector is the process's: while one thread's block runs, the others' work is not collected
either (a report job's PDF beside a page being built: measured, the same peak memory).
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class _Pauses:
    """The blocks running with the collector paused, and whether it was enabled before them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.resume = False


_PAUSES = _Pauses()


@contextmanager
def paused() -> Iterator[None]:
    pauses = _PAUSES
    with pauses.lock:
        if pauses.depth == 0:
            pauses.resume = gc.isenabled()
            gc.disable()
        pauses.depth += 1
    try:
        yield
    finally:
        with pauses.lock:
            pauses.depth -= 1
            if pauses.depth == 0 and pauses.resume:
                gc.enable()


def pausing(function: Callable[P, R]) -> Callable[P, R]:
    """`function` run with the collector `paused`."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with paused():
            return function(*args, **kwargs)

    return run
