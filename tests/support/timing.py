"""Time under the test's control: a fake clock that moves only when told, and a wait for a condition."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WAIT_LIMIT_S = 120.0  # a correct implementation meets the condition at once; only a hang reaches this


class FakeClock:
    """A monotonic clock that stands still until the test advances it (a drop-in for time.monotonic)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        with self._lock:
            self._now += seconds


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = WAIT_LIMIT_S) -> None:
    """Poll `condition` until it holds; fail naming `what` if it never does (a hang, not a slow machine)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.002)
