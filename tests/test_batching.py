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
    batcher = DynamicBatcher("sum", _row_sums, max_batch_size=64, max_wait_ms=50,
                             on_batch=lambda name, size: batch_sizes.append(size))
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
    batcher = DynamicBatcher("sum", _row_sums, max_batch_size=4, on_batch=lambda _, size: batch_sizes.append(size))
    views = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.testing.assert_array_equal(batcher.submit(views), views)
    batcher.close()
    assert batch_sizes == [4, 4, 2]


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
