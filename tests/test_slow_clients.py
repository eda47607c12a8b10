"""50 slow-sending clients in front of nginx (deploy/nginx.conf) leave normal requests' p99 within 2x."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np

from bench.launch import free_port, running_gunicorn, running_nginx
from bench.restarts import post_study

SLOW_CLIENTS = 50
REQUESTS = 60
ABSOLUTE_SLACK_S = 0.02  # timer and scheduler noise on a 2-core machine, next to a ~10 ms request


def _p99_of_normal_requests(url: str) -> float:
    """p99 latency of REQUESTS studies from two clients, all answered 200."""
    latencies: list[float] = []

    def client() -> None:
        for _ in range(REQUESTS // 2):
            started = time.monotonic()
            assert post_study(url) == "200"
            latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(latencies) == REQUESTS
    return float(np.percentile(latencies, 99))


def _slow_sender(address: tuple[str, int], stop: threading.Event) -> None:
    """Send a request head and then its body a few bytes at a time, until told to stop (bounded)."""
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 1000000\r\n\r\n")
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                connection.sendall(b"\x89PNG\r\n\x1a\n")
            except OSError:
                return
            stop.wait(0.5)


def test_fifty_slow_senders_leave_normal_requests_p99_within_twice_the_quiet_figure(tiny_repository: Path,
                                                                                     tmp_path: Path) -> None:
    port = free_port()
    with running_gunicorn(tiny_repository, tmp_path / "replica.log", {"TRIAGE_AUDIT_LOG": ""}, threads=8,
                          port=port) as replica, running_nginx([f"127.0.0.1:{port}"], tmp_path / "nginx") as nginx:
        replica.wait_until_ready()
        post_study(nginx.url)  # warm the connection pool
        quiet = _p99_of_normal_requests(nginx.url)
        stop = threading.Event()
        host, nginx_port = nginx.url.removeprefix("http://").split(":")
        senders = [threading.Thread(target=_slow_sender, args=((host, int(nginx_port)), stop))
                   for _ in range(SLOW_CLIENTS)]
        for sender in senders:
            sender.start()
        time.sleep(1)  # every slow sender has connected and is trickling its body
        try:
            loaded = _p99_of_normal_requests(nginx.url)
        finally:
            stop.set()
            for sender in senders:
                sender.join(timeout=10)
    assert loaded <= 2 * quiet + ABSOLUTE_SLACK_S, (quiet, loaded)
