"""What clients see when a gunicorn worker is killed (SIGKILL) or the server is stopped (SIGTERM) under load.

    python -m bench.restarts [--models h5] [--clients 4]

Starts the service (bench.launch), keeps `clients` posting 2-view studies, then (1) SIGKILLs the worker and
measures the time until /readyz says 200 again, counting the answers meanwhile, and (2) sends SIGTERM to
the master and counts what the requests in flight and the ones after got. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

from bench.launch import Server, encode_multipart, http_status, running_gunicorn
from bench.workload import make_view_bytes

STUDY = encode_multipart([("a.png", make_view_bytes(1)), ("b.png", make_view_bytes(2))])


def post_study(url: str, study: tuple[bytes, str] = STUDY, timeout_s: float = 60.0, source: str | None = None) -> str:
    """POST one study (multipart body, content type); the outcome as a short word: the status, or the error's name.

    `source`: the local address to send from (another loopback address is another client to the front).
    """
    body, content_type = study
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s,
                                            source_address=(source, 0) if source else None)
    try:
        connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (http.client.HTTPException, OSError) as error:
        return type(error).__name__
    finally:
        connection.close()


class Clients:
    """Threads posting studies until stopped; each outcome with its start and end times."""

    def __init__(self, url: str, count: int, study: tuple[bytes, str] = STUDY) -> None:
        self.url, self.study, self.outcomes, self.running = url, study, [], True
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while self.running:
            started = time.monotonic()
            outcome = post_study(self.url, self.study)
            self.outcomes.append((started, time.monotonic(), outcome))
            if outcome not in ("200", "503"):
                time.sleep(0.05)  # a refused connection: do not spin

    def stop(self) -> list[tuple[float, float, str]]:
        """Stop the threads; return every outcome."""
        self.running = False
        for thread in self.threads:
            thread.join(timeout=90)
        return self.outcomes


def measure_worker_kill(server: Server, clients: int) -> dict[str, object]:
    """SIGKILL the worker under load; seconds until /readyz is 200 again and what clients saw meanwhile."""
    load = Clients(server.url, clients)
    time.sleep(3)
    killed = time.monotonic()
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    while http_status(server.url + "/readyz", timeout_s=2) != 200 or time.monotonic() - killed < 0.5:
        time.sleep(0.05)
    back = time.monotonic() - killed
    time.sleep(2)
    outcomes = load.stop()
    during = Counter(outcome for started, ended, outcome in outcomes if ended >= killed and started <= killed + back)
    return {"seconds_back_to_ready": round(back, 2), "outcomes_meanwhile": dict(during),
            "outcomes_all": dict(Counter(outcome for _, _, outcome in outcomes))}


def measure_sigterm(server: Server, clients: int) -> dict[str, object]:
    """SIGTERM the master under load: what the requests in flight and the later ones got; the exit."""
    load = Clients(server.url, clients)
    time.sleep(3)
    stopped = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=60)
    exited = time.monotonic() - stopped
    outcomes = load.stop()
    in_flight = Counter(outcome for started, ended, outcome in outcomes if started < stopped <= ended)
    after = Counter(outcome for started, _, outcome in outcomes if started >= stopped)
    return {"exit_code": exit_code, "seconds_to_exit": round(exited, 2), "in_flight_at_sigterm": dict(in_flight),
            "started_after_sigterm": dict(after)}


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(prog="python -m bench.restarts", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("h5"))
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        with running_gunicorn(args.models, Path(folder) / "kill.log", {"TRIAGE_AUDIT_LOG": ""}, threads=8) as server:
            print("first start to ready:", round(server.wait_until_ready(300), 2), "s")
            print("worker SIGKILL:", measure_worker_kill(server, args.clients))
        with running_gunicorn(args.models, Path(folder) / "term.log", {"TRIAGE_AUDIT_LOG": ""}, threads=8) as server:
            server.wait_until_ready(300)
            print("master SIGTERM:", measure_sigterm(server, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
