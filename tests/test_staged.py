"""io.staged: stages in threads give exactly the sequential results, in order, run side by side,
hand errors to the consumer and stop cleanly when it stops."""

from __future__ import annotations

import threading

import pytest

from deformact.io.staged import staged


def test_results_in_order_as_the_sequential_loop():
    out = list(staged(range(50), lambda x: x * 2, lambda x: x + 1, depth=1))
    assert out == [2 * x + 1 for x in range(50)]
    assert list(staged(iter([]), str)) == [] and list(staged("abc")) == ["a", "b", "c"]


def test_stages_work_side_by_side():
    """Stage 1 holds item 0 until stage 0 has started item 1: only concurrent stages get past it
    (a sequential loop would wait out the timeout and fail)."""
    started_1 = threading.Event()

    def first(x):
        if x == 1:
            started_1.set()
        return x

    def second(x):
        if x == 0:
            assert started_1.wait(timeout=10), "stage 0 did not run while stage 1 held item 0"
        return x

    assert list(staged(range(3), first, second)) == [0, 1, 2]


def test_an_error_arrives_after_the_items_before_it():
    def source():
        yield from range(3)
        raise OSError("decoder died")

    got = []
    with pytest.raises(OSError, match="decoder died"):
        for x in staged(source(), lambda x: x):
            got.append(x)
    assert got == [0, 1, 2]

    def stage(x):
        if x == 4:
            raise ValueError("bad frame 4")
        return x

    got = []
    with pytest.raises(ValueError, match="bad frame 4"):
        for x in staged(range(10), stage):
            got.append(x)
    assert got == [0, 1, 2, 3]


def test_stopping_early_stops_the_threads_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from range(10**9)
        finally:
            closed.set()

    before = threading.active_count()
    gen = staged(source(), lambda x: x, depth=2)
    for x in gen:
        if x == 5:
            break
    gen.close()
    assert closed.is_set() and threading.active_count() == before
