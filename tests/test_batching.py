"""The dynamic batcher: merging, chunking, errors, back-pressure."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from classifiers import Overloaded
from classifiers.batching import DynamicBatcher


def _row_sums(views: np.ndarray) -> np.ndarray:
    return views.reshape(len(views), -1).sum(axis=1, keepdims=True)


def test_concurrent_requests_are_merged_and_answered_with_their_own_rows() -> None:
    batch_sizes: list[int] = []

    def slow_row_sums(views: np.ndarray) -> np.ndarray:
        time.sleep(0.2)  # the requests that arrive meanwhile queue up and form the next batch
        return _row_sums(views)

    batcher = DynamicBatcher("sum", slow_row_sums, max_batch_size=64, max_wait_ms=50,
                             on_batch=lambda name, size, seconds: batch_sizes.append(size))
    results: dict[int, np.ndarray] = {}

    def call(index: int) -> None:
        results[index] = batcher.submit(np.full((2, 3), index, dtype=np.float32))

    threads = [threading.Thread(target=call, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    for index in range(8):
        np.testing.assert_array_equal(results[index], [[3 * index], [3 * index]])
    assert sum(batch_sizes) == 16 and max(batch_sizes) > 2


def test_large_request_runs_in_chunks_of_max_batch_size() -> None:
    batch_sizes: list[int] = []
    batcher = DynamicBatcher("sum", _row_sums, max_batch_size=4,
                             on_batch=lambda _, size, seconds: batch_sizes.append(size))
    views = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.testing.assert_array_equal(batcher.submit(views), views)
    batcher.close()
    assert batch_sizes == [4, 4, 2]


def test_a_request_that_would_overfill_the_batch_waits_for_the_next_one() -> None:
    batch_sizes: list[int] = []
    running = threading.Event()

    def slow_row_sums(views: np.ndarray) -> np.ndarray:
        running.set()
        time.sleep(0.2)  # the requests that arrive meanwhile queue up
        return _row_sums(views)

    batcher = DynamicBatcher("sum", slow_row_sums, max_batch_size=4, max_wait_ms=50,
                             on_batch=lambda _, size, seconds: batch_sizes.append(size))
    first = threading.Thread(target=batcher.submit, args=(np.zeros((1, 1), dtype=np.float32),))
    first.start()
    assert running.wait(timeout=10)
    results: dict[int, np.ndarray] = {}

    def call(index: int) -> None:
        results[index] = batcher.submit(np.full((3, 1), index, dtype=np.float32))

    threads = [threading.Thread(target=call, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in [first, *threads]:
        thread.join()
    batcher.close()
    assert batch_sizes == [1, 3, 3, 3]  # never 4 + 2: a 3-view request does not fit after another
    for index in range(3):
        np.testing.assert_array_equal(results[index], [[index]] * 3)


def test_model_error_reaches_every_caller_and_the_batcher_keeps_serving() -> None:
    def fail_on_negative(views: np.ndarray) -> np.ndarray:
        if views.min() < 0:
            raise RuntimeError("negative input")
        return _row_sums(views)

    batcher = DynamicBatcher("checked", fail_on_negative, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="negative input"):
        batcher.submit(-np.ones((1, 2)))
    np.testing.assert_array_equal(batcher.submit(np.ones((1, 2))), [[2]])
    batcher.close()


def test_full_queue_raises_overloaded_at_once() -> None:
    release = threading.Event()

    def slow(views: np.ndarray) -> np.ndarray:
        release.wait(5)
        return _row_sums(views)

    batcher = DynamicBatcher("slow", slow, max_batch_size=2, max_wait_ms=0, max_queue_views=4)
    worker = threading.Thread(target=batcher.submit, args=(np.ones((4, 1)),))
    worker.start()
    time.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(Overloaded, match="4 views queued"):
        batcher.submit(np.ones((1, 1)))
    assert time.monotonic() - started < 0.5
    release.set()
    worker.join()
    assert batcher.queued_views == 0
    batcher.close()


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher("bad", _row_sums, max_batch_size=0)


def _slow_sums(seconds_per_view: float, seen: list[float]):
    """A model that takes `seconds_per_view` per view and records the first value of every view it computes."""

    def run(views: np.ndarray) -> np.ndarray:
        seen.extend(float(view.flat[0]) for view in views)
        time.sleep(seconds_per_view * len(views))
        return _row_sums(views)

    return run


def test_request_that_cannot_start_by_its_deadline_is_refused_at_once() -> None:
    seen: list[float] = []
    batcher = DynamicBatcher("slow", _slow_sums(0.05, seen), max_batch_size=4, max_wait_ms=0)
    batcher.submit(np.zeros((2, 1), dtype=np.float32))  # measures about 0.05 s per view
    assert 0.03 < batcher.seconds_per_view < 0.2
    backlog = threading.Thread(target=batcher.submit, args=(np.ones((20, 1), dtype=np.float32),))
    backlog.start()
    while batcher.queued_views == 0:
        time.sleep(0.001)
    started = time.monotonic()
    with pytest.raises(Overloaded, match="within its deadline") as raised:
        batcher.submit(np.full((1, 1), 7, dtype=np.float32), deadline=time.monotonic() + 0.2)
    assert time.monotonic() - started < 0.15  # refused at once, not after waiting until the 0.2 s deadline
    assert raised.value.retry_after_s >= 1
    # A deadline the backlog leaves room for is accepted.
    np.testing.assert_array_equal(batcher.submit(np.full((1, 1), 8, dtype=np.float32),
                                                 deadline=time.monotonic() + 10), [[8]])
    backlog.join()
    batcher.close()
    assert 7.0 not in seen


def test_request_still_queued_at_its_deadline_is_dropped_and_never_computed() -> None:
    seen: list[float] = []
    release = threading.Event()

    def gated_sums(views: np.ndarray) -> np.ndarray:
        release.wait(5)  # the first batch holds the worker: the next request stays queued
        seen.extend(float(value) for value in views.ravel())
        return views.reshape(len(views), -1).sum(axis=1, keepdims=True)

    # Nothing measured yet, so admission cannot foresee the wait; the busy worker holds the views queued.
    batcher = DynamicBatcher("slow", gated_sums, max_batch_size=64, max_wait_ms=0)
    busy = threading.Thread(target=batcher.submit, args=(np.full((1, 1), 4, dtype=np.float32),))
    busy.start()
    while batcher.queued_views < 1:
        time.sleep(0.01)
    time.sleep(0.2)  # the worker has taken the busy request and waits inside the model
    started = time.monotonic()
    with pytest.raises(Overloaded, match="could not start"):
        batcher.submit(np.full((3, 1), 5, dtype=np.float32), deadline=time.monotonic() + 0.1)
    assert 0.09 < time.monotonic() - started < 0.5
    release.set()
    busy.join(5)
    assert batcher.queued_views == 0
    np.testing.assert_array_equal(batcher.submit(np.full((1, 1), 6, dtype=np.float32)), [[6]])
    batcher.close()
    assert seen == [4.0, 6.0]  # the withdrawn views were never computed


def test_a_lone_request_does_not_wait_for_company() -> None:
    batcher = DynamicBatcher("sum", _row_sums, max_wait_ms=5000)
    started = time.monotonic()
    np.testing.assert_array_equal(batcher.submit(np.ones((1, 3), dtype=np.float32)), [[3]])
    assert time.monotonic() - started < 2.5  # it ran at once, not after max_wait_ms
    batcher.close()


def test_a_burst_waits_for_stragglers_up_to_max_wait() -> None:
    batch_sizes: list[int] = []
    running = threading.Event()
    release = threading.Event()

    def gated_row_sums(views: np.ndarray) -> np.ndarray:
        running.set()
        release.wait(5)  # the first batch holds the worker until the burst has queued
        return _row_sums(views)

    batcher = DynamicBatcher("sum", gated_row_sums, max_batch_size=64, max_wait_ms=1500,
                             on_batch=lambda name, size, seconds: batch_sizes.append(size))
    threads = [threading.Thread(target=batcher.submit, args=(np.ones((1, 3), np.float32),)) for _ in range(4)]
    threads[0].start()
    assert running.wait(5)  # the lone first view runs at once, without the batch window
    for thread in threads[1:3]:
        thread.start()
    while batcher.queued_views < 3:
        time.sleep(0.01)
    release.set()
    time.sleep(0.1)  # the burst of two is collected and waits; the straggler arrives within max_wait_ms
    threads[3].start()
    for thread in threads:
        thread.join(10)
    batcher.close()
    assert batch_sizes == [1, 3]


def test_a_lone_request_runs_in_its_callers_thread_and_a_queued_one_in_the_workers() -> None:
    threads_seen: list[str] = []
    running = threading.Event()
    release = threading.Event()

    def gated_row_sums(views: np.ndarray) -> np.ndarray:
        threads_seen.append(threading.current_thread().name)
        running.set()
        release.wait(5)
        return _row_sums(views)

    batcher = DynamicBatcher("sum", gated_row_sums, max_wait_ms=0)
    lone = threading.Thread(target=batcher.submit, args=(np.ones((1, 3), np.float32),), name="caller-1")
    lone.start()
    assert running.wait(5)
    queued = threading.Thread(target=batcher.submit, args=(np.ones((1, 3), np.float32),), name="caller-2")
    queued.start()
    while batcher.queued_views < 2:
        time.sleep(0.01)
    time.sleep(0.1)
    assert threads_seen == ["caller-1"]  # the model runs one batch at a time: the second waits for the first
    release.set()
    for thread in (lone, queued):
        thread.join(5)
    batcher.close()
    assert threads_seen == ["caller-1", "batcher-sum"] and batcher.queued_views == 0
