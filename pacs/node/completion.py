"""When a study is complete (no instance for `stable_s`) and when a failed send is tried again; time is a parameter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class StableStudies:
    """Studies by the time their last instance arrived; `due` hands out those silent for `stable_s`."""

    stable_s: float
    clock: Clock
    _last_arrival: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def touch(self, study_id: str) -> None:
        """An instance of the study arrived now (or the study was found in the spool at start)."""
        with self._lock:
            self._last_arrival[study_id] = self.clock()

    def due(self) -> list[str]:
        """The studies complete now, removed from the watch (a later instance starts a new watch)."""
        now = self.clock()
        with self._lock:
            complete = [study for study, last in self._last_arrival.items() if now - last >= self.stable_s]
            for study in complete:
                del self._last_arrival[study]
        return sorted(complete)

    def seconds_to_next(self) -> float | None:
        """Seconds until the next study is complete; None when none is watched."""
        now = self.clock()
        with self._lock:
            if not self._last_arrival:
                return None
            return max(0.0, min(self._last_arrival.values()) + self.stable_s - now)


@dataclass
class RetrySchedule:
    """Failed sends by study: the next try after a delay that doubles from `first_s` up to `max_s`."""

    first_s: float
    max_s: float
    clock: Clock
    _next: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # study -> (when, delay, tries)

    def now(self, study_id: str) -> None:
        """Try this study's send at the next step (a newly staged or recovered SR)."""
        self._next[study_id] = (self.clock(), self.first_s, 0)

    def failed(self, study_id: str) -> tuple[float, int]:
        """The send failed: schedule the next try; (seconds to it, tries so far)."""
        _, delay, tries = self._next.get(study_id, (0.0, self.first_s, 0))
        self._next[study_id] = (self.clock() + delay, min(delay * 2, self.max_s), tries + 1)
        return delay, tries + 1

    def done(self, study_id: str) -> None:
        """The send succeeded: forget the study."""
        self._next.pop(study_id, None)

    def due(self) -> list[str]:
        """The studies whose send should be tried now."""
        now = self.clock()
        return sorted(study for study, (when, _, _) in self._next.items() if when <= now)

    def seconds_to_next(self) -> float | None:
        """Seconds until the next try; None when nothing waits."""
        if not self._next:
            return None
        return max(0.0, min(when for when, _, _ in self._next.values()) - self.clock())
