"""The garbage collector held off while a large report is built (issue 21, `allocator.collector`)."""

from __future__ import annotations

import gc
import threading

import pytest

from allocator import collector


@pytest.fixture(autouse=True)
def _collector_enabled() -> None:
    assert gc.isenabled()


def test_a_paused_block_gives_the_collector_back_even_when_it_fails() -> None:
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("a failed report")
    assert gc.isenabled()


def test_a_collector_someone_else_disabled_stays_disabled() -> None:
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_blocks_of_two_threads_enable_it_once_both_are_done() -> None:
    """A worker's threads serve requests side by side: the first to end must not switch the
    collector back on under the other."""
    entered, release_first, first_done, release_second = (threading.Event() for _ in range(4))
    seen: list[bool] = []

    def first() -> None:
        with collector.paused():
            entered.set()
            release_first.wait(5)
        first_done.set()

    def second() -> None:
        entered.wait(5)
        with collector.paused():
            release_first.set()
            first_done.wait(5)
            seen.append(gc.isenabled())  # the first block has ended: still paused for this one
            release_second.wait(5)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_done.wait(5)
    release_second.set()
    for thread in threads:
        thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_pausing_runs_the_function_with_the_collector_paused() -> None:
    @collector.pausing
    def build(rows: int) -> tuple[int, bool]:
        return rows, gc.isenabled()

    assert build(3) == (3, False)
    assert build.__name__ == "build"
    assert gc.isenabled()
