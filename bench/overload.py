"""Overload run: real gunicorn over a repository, N clients posting 3-view studies for T seconds.

`python -m bench.overload --clients 64 --seconds 20 [--models h5]` prints status counts, the latency of
accepted (200) and shed (503) studies, throughput, and /healthz latency probed every 0.5 s meanwhile.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import requests

from bench.launch import running_gunicorn
from bench.workload import make_view_bytes


def hammer(url: str, stop: float, results: list) -> None:
    """Post 3-view studies until `stop`; record (status or exception name, seconds)."""
    session = requests.Session()
    views = [("image", (f"v{index}.png", make_view_bytes(index, (512, 512)), "image/png")) for index in range(3)]
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
    studies: list = []
    health: list = []
    with tempfile.TemporaryDirectory() as folder, running_gunicorn(
            Path(arguments.models), Path(folder) / "gunicorn.log", {"TRIAGE_AUDIT_LOG": ""}, threads=32) as server:
        server.wait_until_ready(300)
        stop = time.monotonic() + arguments.seconds
        threads = [threading.Thread(target=hammer, args=(server.url, stop, studies)) for _ in range(arguments.clients)]
        threads.append(threading.Thread(target=probe, args=(server.url, stop, health)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
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
