"""The service end to end: real gunicorn on a free loopback port, concurrent clients posting studies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.machine import process_peak_rss_mb
from bench.workload import latency_summary, run_concurrently

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    """A running gunicorn: its base URL, master process, seconds until /readyz said 200."""

    url: str
    process: subprocess.Popen
    ready_seconds: float

    def worker_pids(self) -> list[int]:
        """Process ids of the gunicorn workers (children of the master)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def run_gunicorn(models_dir: Path, workers: int, threads: int, environment: dict[str, str], log_path: Path,
                 startup_limit_s: float) -> Iterator[Server]:
    """Start `gunicorn -c gunicorn.conf.py app:app` on 127.0.0.1 and wait for /readyz; always stopped."""
    url = f"http://127.0.0.1:{free_port()}"
    variables = {**os.environ, **environment, "TRIAGE_BIND": url.removeprefix("http://"),
                 "TRIAGE_MODELS": str(models_dir), "TRIAGE_WORKERS": str(workers), "TRIAGE_THREADS": str(threads),
                 "TRIAGE_LOG_LEVEL": "warning", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                                   cwd=ROOT, env=variables, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        while _status(url + "/readyz") != 200:
            if process.poll() is not None or time.perf_counter() - started > startup_limit_s:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"gunicorn not ready within {startup_limit_s:.0f} s; log tail:\n{tail}")
            time.sleep(1.0)
        yield Server(url, process, time.perf_counter() - started)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _status(url: str) -> int | None:
    """HTTP status of GET url, or None when nothing answers."""
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return None


def encode_study(views: list[bytes]) -> tuple[bytes, str]:
    """multipart/form-data body with one `image` part per view; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="view{index}.png"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for index, data in enumerate(views)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


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
