"""Slow clients against normal ones: 50 slow senders in front of nginx (deploy/nginx.conf), p99 quiet and loaded.

    python -m bench.slow_clients --models DIR [--rounds 4] [--requests 60] [--count 50]

Starts gunicorn (1 worker, 8 threads) over DIR behind nginx on loopback ports, then alternates quiet rounds
(bench.latency alone) with loaded ones (the same while bench.slow_senders trickles `--count` bodies), so a
drift or a hiccup of the machine falls on both. Prints one JSON object: the quiet and loaded p99, their
ratio and the errors; exits 1 when the loaded p99 exceeds twice the quiet one plus 20 ms of timer noise
(the target) or any normal request was not answered 200.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from bench.launch import ROOT, free_port, running_gunicorn, running_nginx
from bench.restarts import post_study

ABSOLUTE_SLACK_S = 0.02  # timer and scheduler noise on a 2-core machine, next to a ~10 ms request


def normal_request_latencies(url: str, requests: int) -> tuple[list[float], list[str]]:
    """Latencies of `requests` studies from two clients (bench.latency, in its own process), and the non-200s."""
    measured = subprocess.run([sys.executable, "-m", "bench.latency", url, "--requests", str(requests),
                               "--clients", "2"], cwd=ROOT, capture_output=True, text=True, timeout=180, check=True)
    figures = json.loads(measured.stdout)
    return figures["latencies_s"], figures["errors"]


SLOW_SOURCE = "127.0.0.2"  # another loopback address than the measuring clients'


@contextlib.contextmanager
def slow_senders_trickling(url: str, count: int, seconds: float = 60.0, source: str = SLOW_SOURCE) -> Iterator[None]:
    """`count` connections to `url` trickling their bodies for the length of the block (their own process).

    They run apart, as they would on other machines, and so do the clients that measure: a caller that has
    run hundreds of tests would slow the measuring with its own garbage collections, not the service. They
    connect from `source`: nginx limits the requests at once per address, and the measuring clients use
    127.0.0.1.
    """
    senders = subprocess.Popen([sys.executable, "-m", "bench.slow_senders", url, "--count", str(count),
                                "--seconds", str(seconds), "--source", source], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    try:
        assert senders.stdout is not None
        line = senders.stdout.readline().strip()
        if line != f"{count} slow senders connected":
            raise RuntimeError(f"the slow senders did not connect: {line!r}")
        time.sleep(1)  # every slow sender has sent a first piece of its body
        yield
    finally:
        senders.terminate()
        senders.wait(timeout=10)


def measure(models_dir: Path, rounds: int, requests: int, count: int, run_dir: Path) -> dict[str, object]:
    """Alternate quiet and loaded rounds through nginx in front of one gunicorn; the p99s and the errors."""
    port = free_port()
    quiet: list[float] = []
    loaded: list[float] = []
    errors: list[str] = []
    with running_gunicorn(models_dir, run_dir / "replica.log", {"TRIAGE_AUDIT_LOG": ""}, threads=8,
                          port=port) as replica, running_nginx([f"127.0.0.1:{port}"], run_dir / "nginx") as nginx:
        replica.wait_until_ready()
        post_study(nginx.url)  # warm the connection pool
        for _ in range(rounds):
            latencies, failed = normal_request_latencies(nginx.url, requests)
            quiet += latencies
            errors += failed
            with slow_senders_trickling(nginx.url, count):
                latencies, failed = normal_request_latencies(nginx.url, requests)
            loaded += latencies
            errors += failed
    quiet_p99, loaded_p99 = float(np.percentile(quiet, 99)), float(np.percentile(loaded, 99))
    return {"slow_senders": count, "requests_per_round": requests, "rounds": rounds,
            "quiet_p99_s": round(quiet_p99, 4), "loaded_p99_s": round(loaded_p99, 4),
            "loaded_vs_quiet": round(loaded_p99 / quiet_p99, 2),
            "within_target": loaded_p99 <= 2 * quiet_p99 + ABSOLUTE_SLACK_S, "errors": errors}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the figures; exit 1 when the target is missed or a request failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.slow_clients", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=Path("h5"), help="the model repository (default h5)")
    parser.add_argument("--rounds", type=int, default=4, help="quiet and loaded rounds (default 4 of each)")
    parser.add_argument("--requests", type=int, default=60, help="normal studies per round (default 60)")
    parser.add_argument("--count", type=int, default=50, help="slow senders in the loaded rounds (default 50)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(args.models, args.rounds, args.requests, args.count, Path(folder))
    print(json.dumps(figures))
    return 0 if figures["within_target"] and not figures["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
