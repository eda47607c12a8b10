"""The service end to end: real gunicorn on a free loopback port, concurrent clients posting studies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from bench.launch import Server, encode_multipart, running_gunicorn
from bench.machine import process_peak_rss_mb
from bench.workload import latency_summary, run_concurrently


@contextmanager
def run_gunicorn(models_dir: Path, workers: int, threads: int, environment: dict[str, str], log_path: Path,
                 startup_limit_s: float) -> Iterator[Server]:
    """Start the service (bench.launch) quietly and wait for /readyz; `ready_seconds` says how long it took."""
    quiet = {**environment, "TRIAGE_LOG_LEVEL": "warning"}
    with running_gunicorn(models_dir, log_path, quiet, workers=workers, threads=threads) as server:
        server.wait_until_ready(startup_limit_s)
        yield server


def encode_study(views: list[bytes]) -> tuple[bytes, str]:
    """multipart/form-data body with one `image` part per view; returns (body, content type)."""
    return encode_multipart([(f"view{index}.png", data) for index, data in enumerate(views)])


def load_test(server: Server, views: list[bytes], views_per_study: int, clients: int, studies: int,
              time_limit_s: float) -> dict[str, Any]:
    """`clients` concurrent keep-alive clients POST /predict `studies` studies (bounded by `time_limit_s`)."""
    sessions = threading.local()
    bodies = [encode_study([views[(index * views_per_study + number) % len(views)]
                            for number in range(views_per_study)]) for index in range(min(studies, 16))]

    def post(index: int) -> None:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        body, content_type = bodies[index % len(bodies)]
        response = sessions.session.post(server.url + "/predict", data=body,
                                         headers={"Content-Type": content_type}, timeout=120)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

    post(0)
    wall, latencies, errors = run_concurrently(post, studies, clients, time_limit_s)
    done = len(latencies)
    return {"clients": clients, "views_per_study": views_per_study, "studies": done, "errors": len(errors),
            "error_examples": sorted(set(errors))[:3], "seconds": wall, "studies_per_s": done / wall,
            "views_per_s": done * views_per_study / wall, **latency_summary(latencies)}


def worker_peak_rss_mb(server: Server) -> float | None:
    """Largest VmHWM among the gunicorn workers, MB."""
    values = [value for value in map(process_peak_rss_mb, server.worker_pids()) if value is not None]
    return max(values) if values else None
