"""The dynamic batcher: merging, chunking, errors, back-pressure, deadlines, with time under the test's control.

The model is a gate the test opens, and deadlines, the batch window and the measured speed read a FakeClock,
so each verdict follows from the order of events, not from how fast this machine runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from classifiers import Overloaded
from classifiers.batching import DynamicBatcher
from tests.support.timing import WAIT_LIMIT_S, FakeClock, wait_until


def _row_sums(views: np.ndarray) -> np.ndarray:
    return views.reshape(len(views), -1).sum(axis=1, keepdims=True)


class GatedModel:
    """Row sums that wait for `release` before answering; records batch sizes, threads and first values.

    With a clock, each batch advances it by `seconds_per_view` per view, so the measured speed is exact.
    """

    def __init__(self, clock: FakeClock | None = None, seconds_per_view: float = 0.0) -> None:
        self.release = threading.Event()
        self.running = threading.Event()  # set when the first batch has entered the model
        self.batch_sizes: list[int] = []
        self.threads: list[str] = []
        self.values: list[float] = []
        self._clock = clock
        self._seconds_per_view = seconds_per_view

    def __call__(self, views: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(views))
        self.threads.append(threading.current_thread().name)
        self.values.extend(float(view.flat[0]) for view in views)
        self.running.set()
        if not self.release.wait(WAIT_LIMIT_S):
            raise RuntimeError("the test never released the model")
        if self._clock is not None:
            self._clock.advance(self._seconds_per_view * len(views))
        return _row_sums(views)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def model(clock: FakeClock) -> GatedModel:
    """A gated model that measures 0.05 s per view on the fake clock."""
    return GatedModel(clock, seconds_per_view=0.05)


@pytest.fixture
def make_batcher(model: GatedModel, clock: FakeClock) -> Iterator[Callable[..., DynamicBatcher]]:
    """Batchers on the fake clock (the gated model by default), all released and closed after the test."""
    made: list[DynamicBatcher] = []

    def make(run_batch: Callable[[np.ndarray], np.ndarray] | None = None, **settings) -> DynamicBatcher:
        batcher = DynamicBatcher("sum", run_batch or model, clock=clock, **settings)
        made.append(batcher)
        return batcher

    yield make
    model.release.set()
    for batcher in made:
        batcher.close()


def _in_thread(function: Callable, *args, name: str | None = None) -> threading.Thread:
    thread = threading.Thread(target=function, args=args, name=name)
    thread.start()
    return thread


def _requests_queued(batcher: DynamicBatcher) -> int:
    """Requests put on the batcher's queue so far (white box: the batcher never calls task_done)."""
    return batcher._queue.unfinished_tasks


def _join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(WAIT_LIMIT_S)
        assert not thread.is_alive(), f"{thread.name} still waits"


def _submit_lone_gated(batcher: DynamicBatcher, model: GatedModel, views: np.ndarray) -> threading.Thread:
    """Submit `views` from a thread; return once they hold the model (it runs a lone request in that thread)."""
    thread = _in_thread(batcher.submit, views, name="lone-caller")
    assert model.running.wait(WAIT_LIMIT_S)
    return thread


def test_concurrent_requests_are_merged_and_answered_with_their_own_rows(make_batcher, model) -> None:
    batcher = make_batcher(max_batch_size=64, max_wait_ms=0)
    lone = _submit_lone_gated(batcher, model, np.zeros((2, 3), dtype=np.float32))
    results: dict[int, np.ndarray] = {}

    def call(index: int) -> None:
        results[index] = batcher.submit(np.full((2, 3), index, dtype=np.float32))

    callers = [_in_thread(call, index) for index in range(1, 8)]
    wait_until(lambda: _requests_queued(batcher) == 7, "seven requests queued behind the busy model")
    model.release.set()
    _join(lone, *callers)
    for index in range(1, 8):
        np.testing.assert_array_equal(results[index], [[3 * index], [3 * index]])
    assert model.batch_sizes == [2, 14]  # the seven that queued meanwhile ran as one batch


def test_large_request_runs_in_chunks_of_max_batch_size(make_batcher) -> None:
    batch_sizes: list[int] = []
    batcher = make_batcher(_row_sums, max_batch_size=4, on_batch=lambda _, size, seconds: batch_sizes.append(size))
    views = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.testing.assert_array_equal(batcher.submit(views), views)
    assert batch_sizes == [4, 4, 2]


def test_a_request_that_would_overfill_the_batch_waits_for_the_next_one(make_batcher, model) -> None:
    batcher = make_batcher(max_batch_size=4, max_wait_ms=50)
    lone = _submit_lone_gated(batcher, model, np.zeros((1, 1), dtype=np.float32))
    results: dict[int, np.ndarray] = {}

    def call(index: int) -> None:
        results[index] = batcher.submit(np.full((3, 1), index, dtype=np.float32))

    callers = [_in_thread(call, index) for index in range(3)]
    wait_until(lambda: _requests_queued(batcher) == 3, "three requests queued behind the busy model")
    model.release.set()
    _join(lone, *callers)
    assert model.batch_sizes == [1, 3, 3, 3]  # never 4 + 2: a 3-view request does not fit after another
    for index in range(3):
        np.testing.assert_array_equal(results[index], [[index]] * 3)


def test_model_error_reaches_every_caller_and_the_batcher_keeps_serving(make_batcher) -> None:
    def fail_on_negative(views: np.ndarray) -> np.ndarray:
        if views.min() < 0:
            raise RuntimeError("negative input")
        return _row_sums(views)

    batcher = make_batcher(fail_on_negative, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="negative input"):
        batcher.submit(-np.ones((1, 2)))
    np.testing.assert_array_equal(batcher.submit(np.ones((1, 2))), [[2]])


def test_full_queue_raises_overloaded_at_once(make_batcher, model) -> None:
    batcher = make_batcher(max_batch_size=2, max_wait_ms=0, max_queue_views=4)
    lone = _submit_lone_gated(batcher, model, np.ones((4, 1)))
    with pytest.raises(Overloaded, match="4 views queued"):  # while the model is still held: it did not wait
        batcher.submit(np.ones((1, 1)))
    assert not model.release.is_set()
    model.release.set()
    _join(lone)
    assert batcher.queued_views == 0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher("bad", _row_sums, max_batch_size=0)


def test_speed_is_measured_on_the_batchers_clock(make_batcher, model) -> None:
    batcher = make_batcher(max_batch_size=4, max_wait_ms=0)
    assert batcher.seconds_per_view == 0.0 and batcher.expected_wait_s == 0.0
    model.release.set()
    batcher.submit(np.zeros((2, 1), dtype=np.float32))
    assert batcher.seconds_per_view == pytest.approx(0.05)
    batcher.submit(np.zeros((1, 1), dtype=np.float32))
    assert batcher.seconds_per_view == pytest.approx(0.05)  # a moving average of equal figures


def test_request_that_cannot_start_by_its_deadline_is_refused_at_once(make_batcher, model, clock) -> None:
    batcher = make_batcher(max_batch_size=4, max_wait_ms=0)
    model.release.set()
    batcher.submit(np.zeros((2, 1), dtype=np.float32))  # measures 0.05 s per view on the fake clock
    model.release.clear()
    model.running.clear()
    backlog = _submit_lone_gated(batcher, model, np.ones((20, 1), dtype=np.float32))
    assert batcher.expected_wait_s == pytest.approx(1.0)  # 20 views ahead at 0.05 s
    with pytest.raises(Overloaded, match="cannot start this study within its deadline") as raised:
        batcher.submit(np.full((1, 1), 7, dtype=np.float32), deadline=clock() + 0.2)
    assert raised.value.retry_after_s == 1
    with pytest.raises(Overloaded, match="cannot start"):
        batcher.refuse_if_late(clock() + 0.9)  # the same check, before any work is spent
    batcher.refuse_if_late(clock() + 1.1)
    # A deadline the backlog leaves room for is accepted: the request queues and runs after the backlog.
    accepted: list[np.ndarray] = []
    waiting = _in_thread(lambda: accepted.append(batcher.submit(np.full((1, 1), 8, dtype=np.float32),
                                                                deadline=clock() + 1_000)))
    wait_until(lambda: batcher.queued_views == 21, "the accepted request queued")
    model.release.set()
    _join(backlog, waiting)
    np.testing.assert_array_equal(accepted[0], [[8]])
    assert 7.0 not in model.values


def test_request_still_queued_at_its_deadline_is_dropped_and_never_computed(make_batcher, model, clock) -> None:
    # Nothing measured yet, so the batcher cannot foresee the wait; the held model keeps the views queued.
    batcher = make_batcher(max_batch_size=64, max_wait_ms=0)
    busy = _submit_lone_gated(batcher, model, np.full((1, 1), 4, dtype=np.float32))
    with pytest.raises(Overloaded, match="could not start"):
        batcher.submit(np.full((3, 1), 5, dtype=np.float32), deadline=clock() + 0.05)
    assert not model.release.is_set() and batcher.queued_views == 1  # withdrawn while the model was still held
    model.release.set()
    _join(busy)
    assert batcher.queued_views == 0
    np.testing.assert_array_equal(batcher.submit(np.full((1, 1), 6, dtype=np.float32)), [[6]])
    assert model.values == [4.0, 6.0]  # the withdrawn views were never computed


def test_a_lone_request_does_not_wait_for_company(make_batcher, model) -> None:
    # The batch window is an hour on a clock that stands still: only a request run at once can return.
    batcher = make_batcher(max_wait_ms=3_600_000)
    model.release.set()
    np.testing.assert_array_equal(batcher.submit(np.ones((1, 3), dtype=np.float32)), [[3]])
    assert model.threads == [threading.current_thread().name]  # in the caller's thread, never the window's


def test_a_burst_waits_for_stragglers_up_to_max_wait(make_batcher, model) -> None:
    # The window (an hour of a clock that stands still) stays open until the batch of three is full.
    batcher = make_batcher(max_batch_size=3, max_wait_ms=3_600_000)
    lone = _submit_lone_gated(batcher, model, np.ones((1, 3), np.float32))  # runs at once, without the window
    burst = [_in_thread(batcher.submit, np.ones((1, 3), np.float32)) for _ in range(2)]
    wait_until(lambda: _requests_queued(batcher) == 2, "the burst of two queued")
    model.release.set()
    wait_until(lambda: batcher._queue.qsize() == 0, "the worker took the burst into its batch")
    straggler = _in_thread(batcher.submit, np.ones((1, 3), np.float32))
    _join(lone, *burst, straggler)
    assert model.batch_sizes == [1, 3]


def test_without_a_window_a_burst_runs_as_soon_as_the_model_is_free(make_batcher, model) -> None:
    batcher = make_batcher(max_batch_size=3, max_wait_ms=0)
    lone = _submit_lone_gated(batcher, model, np.ones((1, 3), np.float32))
    burst = [_in_thread(batcher.submit, np.ones((1, 3), np.float32)) for _ in range(2)]
    wait_until(lambda: _requests_queued(batcher) == 2, "the burst of two queued")
    model.release.set()
    _join(lone, *burst)
    _join(_in_thread(batcher.submit, np.ones((1, 3), np.float32)))
    assert model.batch_sizes == [1, 2, 1]


def test_a_lone_request_runs_in_its_callers_thread_and_a_queued_one_in_the_workers(make_batcher, model) -> None:
    batcher = make_batcher(max_wait_ms=0)
    lone = _submit_lone_gated(batcher, model, np.ones((1, 3), np.float32))
    queued = _in_thread(batcher.submit, np.ones((1, 3), np.float32), name="caller-2")
    wait_until(lambda: _requests_queued(batcher) == 1, "the second request queued")
    assert model.threads == ["lone-caller"]  # the model runs one batch at a time: the second waits for the first
    model.release.set()
    _join(lone, queued)
    assert model.threads == ["lone-caller", "batcher-sum"] and batcher.queued_views == 0
