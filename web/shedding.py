"""Load shedding at the door: a cap on predictions in flight (threads left for probes) and deadlines."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flask import Request

from classifiers.errors import DEFAULT_RETRY_AFTER_S
from web.errors import ApiError

DEADLINE_HEADER = "X-Deadline-Ms"


class InFlightLimit:
    """At most `limit` predictions at once in this process; one more is refused at once with 503.

    gunicorn's threads beyond the limit stay free for /healthz, /readyz and /metrics, which therefore
    never wait behind predictions.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Count one prediction for the `with` block, or raise 503 overloaded when `limit` are running."""
        with self._lock:
            if self.in_flight >= self.limit:
                raise ApiError(503, "overloaded", f"{self.in_flight} studies are in progress in this worker, "
                                                  "its limit; retry shortly", retry_after_s=DEFAULT_RETRY_AFTER_S)
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


def request_deadline(request: Request, config: Mapping[str, Any], started: float) -> float:
    """time.monotonic() by which the study must start: QUEUE_TIMEOUT_MS, or the client's shorter X-Deadline-Ms."""
    timeout_ms = float(config["QUEUE_TIMEOUT_MS"])
    text = request.headers.get(DEADLINE_HEADER)
    if text is not None:
        try:
            client_ms = float(text)
        except ValueError:
            client_ms = -1.0
        if not 0 < client_ms < float("inf"):
            raise ApiError(400, "bad_request", f"{DEADLINE_HEADER}: {text[:40]!r} is not a positive number of "
                                               "milliseconds")
        timeout_ms = min(timeout_ms, client_ms)
    return started + timeout_ms / 1000.0
