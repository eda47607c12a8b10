"""Memory bounded by admission: a budget of decoded pixels in flight, shared by one process's requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from classifiers.errors import Overloaded


class PixelBudget:
    """At most `capacity` decoded pixels held at once; a study waits for room until its deadline, then 503.

    Decoding a 16-bit view holds about 11 bytes per pixel at its peak (the uint16 image and the float64
    copy that scales it), so the budget, not luck, bounds what concurrent studies can take.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"pixel budget {capacity!r} must be >= 1")
        self.capacity = capacity
        self._in_use = 0
        self._condition = threading.Condition()

    @property
    def in_use(self) -> int:
        """Pixels held now."""
        return self._in_use

    @contextmanager
    def hold(self, num_pixels: int, deadline: float | None) -> Iterator[None]:
        """Hold `num_pixels` for the `with` block; wait for room until `deadline` (time.monotonic()).

        Raises:
            Overloaded: no room by the deadline (a study larger than the whole budget waits for an
            empty budget instead, so it still runs, alone).
        """
        wanted = min(num_pixels, self.capacity)
        with self._condition:
            while self._in_use + wanted > self.capacity:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Overloaded(f"{self._in_use:,} decoded pixels are in flight in this worker (budget "
                                     f"{self.capacity:,}); retry shortly")
                self._condition.wait(timeout=remaining)
            self._in_use += wanted
        try:
            yield
        finally:
            with self._condition:
                self._in_use -= wanted
                self._condition.notify_all()
