"""50 slow-sending clients in front of nginx (deploy/nginx.conf) leave normal requests' p99 within 2x."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.launch import free_port, running_gunicorn, running_nginx
from bench.restarts import post_study

SLOW_CLIENTS = 50
ROUNDS = 4  # quiet and loaded rounds alternate, so a drift or a hiccup of the machine falls on both
REQUESTS_PER_ROUND = 60
ABSOLUTE_SLACK_S = 0.02  # timer and scheduler noise on a 2-core machine, next to a ~10 ms request


def _normal_request_latencies(url: str) -> list[float]:
    """Latencies of REQUESTS_PER_ROUND studies from two clients, all answered 200."""
    latencies: list[float] = []

    def client() -> None:
        for _ in range(REQUESTS_PER_ROUND // 2):
            started = time.monotonic()
            assert post_study(url) == "200"
            latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(latencies) == REQUESTS_PER_ROUND
    return latencies


def _slow_sender(address: tuple[str, int], stop: threading.Event, connected: list[bool]) -> None:
    """Send a request head and then its body a few bytes at a time, until told to stop (bounded)."""
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 1000000\r\n\r\n")
        connected.append(True)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                connection.sendall(b"\x89PNG\r\n\x1a\n")
            except OSError:
                return
            stop.wait(0.5)


@contextlib.contextmanager
def _slow_senders_trickling(url: str) -> Iterator[None]:
    """SLOW_CLIENTS connections to `url`, each trickling its body, for the length of the block."""
    host, port = url.removeprefix("http://").split(":")
    stop = threading.Event()
    connected: list[bool] = []
    senders = [threading.Thread(target=_slow_sender, args=((host, int(port)), stop, connected))
               for _ in range(SLOW_CLIENTS)]
    for sender in senders:
        sender.start()
    time.sleep(1)  # every slow sender has connected and is trickling its body
    assert len(connected) == SLOW_CLIENTS
    try:
        yield
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=10)


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
