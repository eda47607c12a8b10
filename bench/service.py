"""The service end to end: real gunicorn on a free loopback port, concurrent clients posting studies."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.launch import ROOT, Server, encode_multipart, running_gunicorn
from bench.machine import process_peak_rss_mb
from bench.workload import latency_summary, run_concurrently


@contextmanager
def run_gunicorn(models_dir: Path, workers: int, threads: int, environment: dict[str, str], log_path: Path,
                 startup_limit_s: float, code: Path = ROOT) -> Iterator[Server]:
    """Start the service (bench.launch) quietly and wait for /readyz; `ready_seconds` says how long it took."""
    quiet = {**environment, "TRIAGE_LOG_LEVEL": "warning"}
    with running_gunicorn(models_dir, log_path, quiet, workers=workers, threads=threads, code=code) as server:
        server.wait_until_ready(startup_limit_s)
        yield server


def encode_study(views: list[bytes]) -> tuple[bytes, str]:
    """multipart/form-data body with one `image` part per view; returns (body, content type)."""
    return encode_multipart([(f"view{index}.png", data) for index, data in enumerate(views)])


def connect(server: Server) -> http.client.HTTPConnection:
    """A keep-alive connection to the server (the standard library's client: little CPU of the benchmark's own)."""
    address = urllib.parse.urlsplit(server.url)
    return http.client.HTTPConnection(address.hostname, address.port, timeout=120)


def post_study(connection: http.client.HTTPConnection, body: bytes, content_type: str) -> bytes:
    """POST /predict one encoded study; its JSON answer, or RuntimeError for any answer but 200."""
    connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {answer[:200]!r}")
    return answer


def study_bodies(views: list[bytes], views_per_study: int, count: int) -> list[tuple[bytes, str]]:
    """Up to 16 distinct encoded studies of `views_per_study` views, cycling through `views`."""
    return [encode_study([views[(index * views_per_study + number) % len(views)] for number in range(views_per_study)])
            for index in range(min(count, 16))]


def load_test(server: Server, views: list[bytes], views_per_study: int, clients: int, studies: int,
              time_limit_s: float) -> dict[str, Any]:
    """`clients` concurrent keep-alive clients POST /predict `studies` studies (bounded by `time_limit_s`)."""
    connections = threading.local()
    bodies = study_bodies(views, views_per_study, studies)

    def post(index: int) -> None:
        if not hasattr(connections, "connection"):
            connections.connection = connect(server)
        post_study(connections.connection, *bodies[index % len(bodies)])

    post(0)
    wall, latencies, errors = run_concurrently(post, studies, clients, time_limit_s)
    done = len(latencies)
    return {"clients": clients, "views_per_study": views_per_study, "studies": done, "errors": len(errors),
            "error_examples": sorted(set(errors))[:3], "seconds": wall, "studies_per_s": done / wall,
            "views_per_s": done * views_per_study / wall, **latency_summary(latencies)}


def single_view_against_forward(server: Server, views: list[bytes], forwards: dict[str, Callable[[], Any]],
                                studies: int, block: int = 10) -> dict[str, Any]:
    """One client's 1-view studies over HTTP, in blocks alternating with blocks of the models' forward at batch 1.

    `forwards` runs, in this process, the router's and an expert's forward pass as the service runs them
    (same backend and threads). Timing both in alternate blocks of `block` lets them see the machine in the
    same state (its speed drifts by 10 % from one minute to the next); `forward_ms` holds their medians, the
    p50 less and over their sum (the work around the models; the target's ratio), and `server_timing_ms` the
    medians of the service's own `timing_ms` (decode, router and expert stages, total).
    """
    connection = connect(server)
    bodies = study_bodies(views, 1, len(views))
    post_study(connection, *bodies[0])
    for forward in forwards.values():
        forward()
    latencies: list[float] = []
    forward_seconds: dict[str, list[float]] = {role: [] for role in forwards}
    errors: list[str] = []
    server_timings: list[dict[str, float]] = []
    started = time.perf_counter()
    for index in range(studies):
        if index % block == 0:
            for _ in range(block):
                for role, forward in forwards.items():
                    forward_started = time.perf_counter()
                    forward()
                    forward_seconds[role].append(time.perf_counter() - forward_started)
        post_started = time.perf_counter()
        try:
            answer = post_study(connection, *bodies[index % len(bodies)])
        except (RuntimeError, OSError, http.client.HTTPException) as error:
            errors.append(f"{type(error).__name__}: {str(error)[:200]}")
            connection = connect(server)
            continue
        latencies.append(time.perf_counter() - post_started)
        server_timings.append(json.loads(answer)["timing_ms"])
    wall = time.perf_counter() - started
    forward_ms = {role: 1000 * statistics.median(seconds) for role, seconds in forward_seconds.items()}
    summary = latency_summary(latencies)
    return {"clients": 1, "views_per_study": 1, "studies": len(latencies), "errors": len(errors),
            "error_examples": sorted(set(errors))[:3], "seconds": wall,
            "studies_per_s": len(latencies) / wall, "views_per_s": len(latencies) / wall, "forward_ms": forward_ms,
            "p50_less_forward_ms": summary["p50_ms"] - sum(forward_ms.values()),
            "p50_over_forward": summary["p50_ms"] / sum(forward_ms.values()),
            "server_timing_ms": {key: statistics.median(timing[key] for timing in server_timings)
                                 for key in (server_timings[0] if server_timings else {})},
            **summary}


def worker_peak_rss_mb(server: Server) -> float | None:
    """Largest VmHWM among the gunicorn workers, MB."""
    values = [value for value in map(process_peak_rss_mb, server.worker_pids()) if value is not None]
    return max(values) if values else None
