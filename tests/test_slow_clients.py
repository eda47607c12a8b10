"""50 slow-sending clients in front of nginx (deploy/nginx.conf) leave normal requests' p99 within 2x."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.launch import free_port, running_gunicorn, running_nginx
from bench.restarts import post_study

ROOT = Path(__file__).resolve().parents[1]

SLOW_CLIENTS = 50
ROUNDS = 4  # quiet and loaded rounds alternate, so a drift or a hiccup of the machine falls on both
REQUESTS_PER_ROUND = 60
ABSOLUTE_SLACK_S = 0.02  # timer and scheduler noise on a 2-core machine, next to a ~10 ms request


def _normal_request_latencies(url: str) -> list[float]:
    """Latencies of REQUESTS_PER_ROUND studies from two clients (bench.latency, in its own process), all 200."""
    measured = subprocess.run([sys.executable, "-m", "bench.latency", url, "--requests", str(REQUESTS_PER_ROUND),
                               "--clients", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(measured.stdout)
    assert figures["errors"] == [] and len(figures["latencies_s"]) == REQUESTS_PER_ROUND, figures["errors"]
    return figures["latencies_s"]


@contextlib.contextmanager
def _slow_senders_trickling(url: str) -> Iterator[None]:
    """SLOW_CLIENTS connections to `url`, trickling for the length of the block.

    They run in their own process (bench.slow_senders), as they would on other machines, and so do the
    clients that measure: in this process, after hundreds of tests, the GIL hand-offs and garbage collections
    of a large heap would slow the measuring, not the service.
    """
    # From 127.0.0.2: nginx limits requests at once per address, and the measuring clients use 127.0.0.1.
    senders = subprocess.Popen([sys.executable, "-m", "bench.slow_senders", url, "--count", str(SLOW_CLIENTS),
                                "--seconds", "60", "--source", "127.0.0.2"], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    try:
        assert senders.stdout is not None
        assert senders.stdout.readline().strip() == f"{SLOW_CLIENTS} slow senders connected"
        time.sleep(1)  # every slow sender has sent a first piece of its body
        yield
    finally:
        senders.terminate()
        senders.wait(timeout=10)


def test_fifty_slow_senders_leave_normal_requests_p99_within_twice_the_quiet_figure(tiny_repository: Path,
                                                                                     tmp_path: Path) -> None:
    port = free_port()
    quiet: list[float] = []
    loaded: list[float] = []
    with running_gunicorn(tiny_repository, tmp_path / "replica.log", {"TRIAGE_AUDIT_LOG": ""}, threads=8,
                          port=port) as replica, running_nginx([f"127.0.0.1:{port}"], tmp_path / "nginx") as nginx:
        replica.wait_until_ready()
        post_study(nginx.url)  # warm the connection pool
        for _ in range(ROUNDS):
            quiet += _normal_request_latencies(nginx.url)
            with _slow_senders_trickling(nginx.url):
                loaded += _normal_request_latencies(nginx.url)
    quiet_p99, loaded_p99 = float(np.percentile(quiet, 99)), float(np.percentile(loaded, 99))
    assert loaded_p99 <= 2 * quiet_p99 + ABSOLUTE_SLACK_S, (quiet_p99, loaded_p99)


def test_slow_senders_say_what_they_need(capsys) -> None:
    from bench.slow_senders import main

    with pytest.raises(SystemExit) as exited:
        main(["127.0.0.1"])
    assert exited.value.code == 2 and "expected a URL such as http://127.0.0.1:8080" in capsys.readouterr().err
    assert main([f"http://127.0.0.1:{free_port()}", "--count", "1"]) == 1  # nothing listens there
    assert "cannot connect to" in capsys.readouterr().err


def test_latency_tool_refuses_impossible_counts(capsys) -> None:
    from bench.latency import main

    with pytest.raises(SystemExit) as exited:
        main(["http://127.0.0.1:1", "--requests", "2", "--clients", "3"])
    assert exited.value.code == 2 and "--clients between 1 and --requests" in capsys.readouterr().err
