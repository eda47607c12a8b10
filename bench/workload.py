"""Benchmark inputs and statistics: synthetic radiograph bytes, percentiles, concurrent runs."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

import numpy as np
from PIL import Image


def make_view_bytes(seed: int, size: tuple[int, int] = (512, 400)) -> bytes:
    """A grayscale PNG radiograph stand-in: smooth bone-like band over noise, `size` = (height, width)."""
    generator = np.random.default_rng(seed)
    rows, columns = np.mgrid[0 : size[0], 0 : size[1]]
    band = np.exp(-(((columns - size[1] / 2) / (size[1] / 6 + seed % 7)) ** 2)) * 160
    pixels = np.clip(band + rows * 0.05 + generator.normal(40, 12, size), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean latency in milliseconds (NaN when empty)."""
    if not latencies_s:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    values = np.asarray(latencies_s) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
            "p99_ms": float(np.percentile(values, 99)), "mean_ms": float(values.mean())}


def run_concurrently(task: Callable[[int], None], num_tasks: int, num_workers: int,
                     time_limit_s: float) -> tuple[float, list[float], list[str]]:
    """Run task(index) for up to `num_tasks` indices on `num_workers` threads, stopping at `time_limit_s`.

    Returns (wall seconds, per-task latencies of the tasks that succeeded, error messages).
    """
    next_index = iter(range(num_tasks))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + time_limit_s

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                task(index)
            except Exception as error:  # A failed request is counted, the run goes on.
                with lock:
                    errors.append(f"{type(error).__name__}: {str(error)[:200]}")
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(num_workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=time_limit_s + 120)
    return time.perf_counter() - started, latencies, errors
