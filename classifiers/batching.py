"""A dynamic batcher per model: merges the views of concurrent callers into one batch."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from classifiers.errors import Overloaded


@dataclass
class _Request:
    """Views waiting for one model call, and the slot their result comes back in."""

    views: np.ndarray
    deadline: float | None = None  # the batcher's clock time by which the views must start, or None
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None
    started: bool = False  # taken into a batch (under the batcher's lock)
    cancelled: bool = False  # given up at its deadline before it started (under the lock)


class DynamicBatcher:
    """Run `run_batch` on merged batches of up to `max_batch_size` views from a bounded queue.

    A request that finds the model idle and no other waiting runs at once, in the caller's own thread: a
    lone view pays neither a wait nor the two thread hand-offs through the worker (0.5-2 ms per model on
    two busy cores). When several are waiting (a burst: they queued up while the previous batch ran), the
    worker forms one batch of them, which stays open up to `max_wait_ms` for more until it is full. The
    model runs one batch at a time either way. A request larger than the batch runs in chunks. When
    more than `max_queue_views` views wait, `submit` raises Overloaded at once instead of queueing
    without bound.

    A request may carry a deadline by which its views must start. It is refused at once when the views
    ahead of it, at the measured seconds per view, would not let it start in time; a request still
    waiting at its deadline is dropped from the queue (never computed) and its caller gets Overloaded.
    Deadlines, the batch window and the measured speed are read from `clock` (tests drive a fake one).
    """

    def __init__(
        self,
        name: str,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int = 16,
        max_wait_ms: float = 2.0,
        max_queue_views: int = 256,
        on_batch: Callable[[str, int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1 or max_queue_views < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue_views must be >= 1 and max_wait_ms >= 0")
        self.name = name
        self._run_batch = run_batch
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_queue_views = max_queue_views
        self._on_batch = on_batch
        self.clock = clock
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._lock = threading.Lock()
        self._queued_views = 0
        self._seconds_per_view = 0.0  # moving average of model time per view; 0 until the first batch
        self._closed = False
        self._carried: _Request | None = None  # taken from the queue, did not fit the batch: first of the next
        self._model_busy = threading.Lock()  # held while a batch is collected and run, by the worker or a caller
        self._worker = threading.Thread(target=self._serve, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    @property
    def queued_views(self) -> int:
        """Views waiting or running now."""
        return self._queued_views

    @property
    def expected_wait_s(self) -> float:
        """How long views queued now would wait to start: the views ahead at the measured seconds per view."""
        return self._queued_views * self._seconds_per_view

    @property
    def seconds_per_view(self) -> float:
        """Measured model time per view (moving average), 0 before the first batch."""
        return self._seconds_per_view

    def submit(self, views: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Run the model on `views` (N, H, W, C) as part of a merged batch; return its (N, K) outputs.

        Raises:
            Overloaded: the queue is full, or the views cannot start by `deadline` (a time of `clock`).
        """
        request = _Request(views, deadline)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.name} batcher is closed")
            if self._queued_views and self._queued_views + len(views) > self._max_queue_views:
                raise Overloaded(f"the {self.name} model has {self._queued_views} views queued; retry shortly")
            self._refuse_if_late(deadline)
            self._queued_views += len(views)
            alone = self._queue.empty() and self._carried is None and self._model_busy.acquire(blocking=False)
        if alone:
            try:
                self._run([request])
            finally:
                self._model_busy.release()
        else:
            self._queue.put(request)
            self._wait(request)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def refuse_if_late(self, deadline: float | None) -> None:
        """Raise Overloaded now if views queued now could not start by `deadline` (before any work is spent)."""
        with self._lock:
            self._refuse_if_late(deadline)

    def _refuse_if_late(self, deadline: float | None) -> None:
        """refuse_if_late, under the lock: the views ahead at the measured seconds per view against the deadline."""
        expected_wait_s = self.expected_wait_s
        if deadline is not None and self.clock() + expected_wait_s > deadline:
            raise Overloaded(f"the {self.name} model cannot start this study within its deadline "
                             f"({self._queued_views} views ahead, about {expected_wait_s:.1f} s); retry shortly",
                             retry_after_s=max(1, round(expected_wait_s)))

    def _wait(self, request: _Request) -> None:
        """Wait for the result; at the deadline, withdraw a request that has not started."""
        if request.deadline is not None:
            if request.done.wait(timeout=max(0.0, request.deadline - self.clock())):
                return
            with self._lock:
                if not request.started:
                    request.cancelled = True
                    self._queued_views -= len(request.views)
                    raise Overloaded(f"the {self.name} model could not start this study within its deadline; "
                                     "retry shortly")
        request.done.wait()

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        with self._lock:
            self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _serve(self) -> None:
        """Worker loop: collect a batch, run it, hand each caller its rows."""
        while True:
            first = self._carried if self._carried is not None else self._queue.get()
            self._carried = None
            if first is None:
                return
            with self._model_busy:
                requests = self._collect(first)
                self._run(requests)
            if requests[-1] is None:
                return

    def _record_speed(self, seconds: float, num_views: int) -> None:
        """Update the moving average of seconds per view."""
        per_view = seconds / max(1, num_views)
        previous = self._seconds_per_view
        self._seconds_per_view = per_view if previous == 0.0 else 0.8 * previous + 0.2 * per_view

    def _collect(self, first: _Request) -> list:
        """Gather the requests waiting now; in a burst, more until the batch is full or `max_wait_ms` passed.

        A request that would overfill the batch is carried to the next one, so model calls are full
        batches, not a full batch and a runt (only a request larger than the batch runs in chunks).
        """
        requests: list = [first]
        num_views = len(first.views)
        deadline = self.clock() + self._max_wait_s
        while num_views < self._max_batch_size:
            remaining = deadline - self.clock() if len(requests) > 1 else 0.0
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not None and num_views + len(request.views) > self._max_batch_size:
                self._carried = request
                break
            requests.append(request)
            if request is None:
                break
            num_views += len(request.views)
        return requests

    def _run(self, requests: list) -> None:
        """Run the merged views in chunks of `max_batch_size` and split the outputs back."""
        with self._lock:
            live = [request for request in requests if request is not None and not request.cancelled]
            for request in live:
                request.started = True
        if not live:
            return
        started = self.clock()
        try:
            views = live[0].views if len(live) == 1 else np.concatenate([r.views for r in live])
            outputs = []
            for start in range(0, len(views), self._max_batch_size):
                chunk = views[start : start + self._max_batch_size]
                chunk_started = self.clock()
                outputs.append(self._run_batch(chunk))
                if self._on_batch is not None:
                    self._on_batch(self.name, len(chunk), self.clock() - chunk_started)
            merged = np.concatenate(outputs)
            self._record_speed(self.clock() - started, len(views))
            offset = 0
            for request in live:
                request.result = merged[offset : offset + len(request.views)]
                offset += len(request.views)
        except BaseException as error:  # Every waiting caller must hear of the failure.
            for request in live:
                request.error = error
        finally:
            with self._lock:
                self._queued_views -= sum(len(r.views) for r in live)
            for request in live:
                request.done.set()
