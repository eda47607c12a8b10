"""Load shedding at the door: a cap on predictions in flight, fairly shared (threads left for probes), deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flask import Request

from classifiers.errors import DEFAULT_RETRY_AFTER_S
from web.errors import ApiError
from web.fairness import FairShares, client_address, client_identity, parse_trusted_proxies

DEADLINE_HEADER = "X-Deadline-Ms"


class InFlightLimit:
    """At most `limit` predictions at once in this process, shared fairly between clients; one more is 503 at once.

    gunicorn's threads beyond the limit stay free for /healthz, /readyz and /metrics, which therefore
    never wait behind predictions. Each client (API key, or address) may hold at most its fair share of
    the limit while other clients are sending (web/fairness.py): a flood from one cannot take them all.
    """

    def __init__(self, limit: int, recent_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.shares = FairShares(limit, recent_s, clock)
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Predictions running now."""
        return self.shares.in_flight

    @contextmanager
    def admit(self, client: str = "-") -> Iterator[None]:
        """Count one prediction of `client` for the `with` block, or raise 503 overloaded (limit or share reached)."""
        with self._lock:
            refusal = self.shares.try_take(client)
        if refusal is not None:
            raise ApiError(503, "overloaded", f"{refusal}; retry shortly", retry_after_s=DEFAULT_RETRY_AFTER_S)
        try:
            yield
        finally:
            with self._lock:
                self.shares.release(client)


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


def request_client(request: Request, config: Mapping[str, Any], key_id: str | None) -> str:
    """Who sent the request, for fair shares: its API key id, else its address (behind TRUSTED_PROXIES: theirs)."""
    trusted = parse_trusted_proxies(config.get("TRUSTED_PROXIES") or "")
    address = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), trusted)
    return client_identity(key_id, address)
