"""Memory given back after large requests: glibc's allocator settings and malloc_trim (docs/PERFORMANCE.md).

A study near the limits decodes to gigabytes of arrays. glibc keeps what they freed in its arenas (one per
thread, up to 8 per core) instead of returning it, so a worker stayed hundreds of MiB (after decoding
bombs, gigabytes) above its idle figure until restarted. Two measures, both measured by
bench.memory_return: at most 2 malloc arenas per worker (MALLOC_ARENA_MAX's effect, set with mallopt
after gunicorn's fork), and malloc_trim(0) when the last prediction in flight has been answered and the
worker's resident memory stands more than RELEASE_THRESHOLD_MIB above where the last trim left it.
TRIAGE_MEMORY_RELEASE=off leaves the allocator as glibc sets it up. Where the C library is not glibc
(musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, request

M_ARENA_MAX = -8  # mallopt parameter numbers, from glibc's malloc.h
ARENA_MAX = 2
RELEASE_THRESHOLD_MIB = 64.0
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1 << 20) if hasattr(os, "sysconf") else 4096 / (1 << 20)


def load_glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has malloc_trim and mallopt), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def memory_release_enabled(environ: dict[str, str] | None = None) -> bool:
    """False when TRIAGE_MEMORY_RELEASE is off/0/false/no."""
    value = (os.environ if environ is None else environ).get("TRIAGE_MEMORY_RELEASE", "on")
    return value.strip().lower() not in ("off", "0", "false", "no")


def limit_malloc_arenas(libc: ctypes.CDLL | None = None, arena_max: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas (threads started later share them); True when set."""
    libc = libc or load_glibc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arena_max) == 1)


def resident_mib() -> float:
    """This process's resident memory, MiB (from /proc/self/statm; 0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_MIB
    except (OSError, IndexError, ValueError):
        return 0.0


class MemoryRelease:
    """Give freed memory back to the system once the worker is idle again after a large request."""

    def __init__(self, predictions_in_flight: Callable[[], int], trim: Callable[[], object] | None,
                 resident: Callable[[], float] = resident_mib,
                 threshold_mib: float = RELEASE_THRESHOLD_MIB) -> None:
        self.predictions_in_flight = predictions_in_flight
        self.trim = trim
        self.resident = resident
        self.threshold_mib = threshold_mib
        self.floor_mib: float | None = None  # resident memory right after the last trim
        self.trims = 0
        self._lock = threading.Lock()

    def after_prediction(self) -> bool:
        """Called once a prediction's answer is sent: trim if none is in flight and memory grew; True if trimmed."""
        if self.trim is None or self.predictions_in_flight() > 0 or not self._lock.acquire(blocking=False):
            return False
        try:
            if self.floor_mib is not None and self.resident() - self.floor_mib <= self.threshold_mib:
                return False
            self.trim()
            self.trims += 1
            self.floor_mib = self.resident()
            return True
        finally:
            self._lock.release()


def build_memory_release(predictions_in_flight: Callable[[], int], enabled: bool) -> MemoryRelease:
    """The app's MemoryRelease: malloc_trim(0) of glibc when enabled and available, else one that does nothing."""
    libc = load_glibc() if enabled else None
    return MemoryRelease(predictions_in_flight, (lambda: libc.malloc_trim(0)) if libc is not None else None)


def register_memory_release(app: Flask) -> None:
    """After each /predict answer is sent, let the app's MemoryRelease trim (app.extensions["memory_release"])."""
    in_flight = app.extensions["in_flight"]
    release = build_memory_release(lambda: in_flight.in_flight, bool(app.config["MEMORY_RELEASE"]))
    app.extensions["memory_release"] = release

    @app.after_request
    def release_after_prediction(response: Response) -> Response:
        if request.endpoint == "triage.predict":
            response.call_on_close(release.after_prediction)
        return response
