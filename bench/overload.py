"""Overload run: real gunicorn over a repository, N clients posting 3-view studies for T seconds.

`python -m bench.overload --clients 64 --seconds 20 [--models h5]` prints status counts, the latency of
accepted (200) and shed (503) studies, throughput, and /healthz latency probed every 0.5 s meanwhile.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import requests

from tests.web_fixtures import free_port, make_radiograph

ROOT = Path(__file__).resolve().parents[1]


def start_gunicorn(models: str) -> tuple[str, subprocess.Popen]:
    """gunicorn -c gunicorn.conf.py on a free loopback port; returns (url, process) once /readyz is 200."""
    port = free_port()
    environment = {**os.environ, "TRIAGE_BIND": f"127.0.0.1:{port}", "TRIAGE_MODELS": models,
                   "TF_CPP_MIN_LOG_LEVEL": "2", "TRIAGE_AUDIT_LOG": ""}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT,
                               env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return url, process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("gunicorn did not become ready within 300 s")


def hammer(url: str, stop: float, results: list) -> None:
    """Post 3-view studies until `stop`; record (status or exception name, seconds)."""
    session = requests.Session()
    views = [("image", (f"v{index}.png", make_radiograph(512, 512, seed=index), "image/png")) for index in range(3)]
    while time.monotonic() < stop:
        started = time.monotonic()
        try:
            outcome: object = session.post(url + "/predict", files=views, timeout=60).status_code
        except requests.RequestException as error:
            outcome = type(error).__name__
        results.append((outcome, time.monotonic() - started))


def probe(url: str, stop: float, results: list) -> None:
    """GET /healthz every 0.5 s until `stop`."""
    while time.monotonic() < stop:
        started = time.monotonic()
        try:
            outcome: object = requests.get(url + "/healthz", timeout=5).status_code
        except requests.RequestException as error:
            outcome = type(error).__name__
        results.append((outcome, time.monotonic() - started))
        time.sleep(0.5)


def quantile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank), nan when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the overload measurement and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--models", default="h5")
    arguments = parser.parse_args(argv)
    url, process = start_gunicorn(arguments.models)
    studies: list = []
    health: list = []
    stop = time.monotonic() + arguments.seconds
    threads = [threading.Thread(target=hammer, args=(url, stop, studies)) for _ in range(arguments.clients)]
    threads.append(threading.Thread(target=probe, args=(url, stop, health)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    accepted = [seconds for outcome, seconds in studies if outcome == 200]
    shed = [seconds for outcome, seconds in studies if outcome == 503]
    print(f"clients {arguments.clients}, {arguments.seconds:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print(f"outcomes {dict(Counter(outcome for outcome, _ in studies))}")
    print(f"200: {len(accepted) / arguments.seconds:.1f} studies/s, p50 {quantile(accepted, 0.5):.3f} s, "
          f"p99 {quantile(accepted, 0.99):.3f} s")
    print(f"503: p50 {quantile(shed, 0.5):.3f} s, p99 {quantile(shed, 0.99):.3f} s")
    print(f"/healthz: {dict(Counter(outcome for outcome, _ in health))}, "
          f"max {max((seconds for _, seconds in health), default=0):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
