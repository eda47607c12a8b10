"""Latencies of normal requests: a few clients, each POSTing the same 2-view study one after another.

    python -m bench.latency http://127.0.0.1:8080 [--requests 60] [--clients 2]

Prints one JSON object: {"latencies_s": [...], "outcomes": {"200": 60}}. It runs in a process of its own, so
what it measures is the service (and its front), not a busy caller: a test process that has run hundreds of
tests holds a large heap and leftover threads, whose garbage collections and GIL hand-offs would land in the
figures. Pair it with bench.slow_senders to see what slow clients do to everyone else.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence

from bench.restarts import post_study


def request_latencies(url: str, requests: int, clients: int) -> tuple[list[float], Counter]:
    """Each of `clients` threads POSTs requests // clients studies to `url`; their latencies and outcomes."""
    latencies: list[float] = []
    outcomes: Counter = Counter()

    def client() -> None:
        for _ in range(requests // clients):
            started = time.monotonic()
            outcomes[post_study(url)] += 1
            latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Send the requests and print their latencies and outcomes as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the service or its front, e.g. http://127.0.0.1:8080")
    parser.add_argument("--requests", type=int, default=60, help="studies to send in all (default 60)")
    parser.add_argument("--clients", type=int, default=2, help="clients sending at once (default 2)")
    arguments = parser.parse_args(argv)
    if arguments.requests < 1 or not 1 <= arguments.clients <= arguments.requests:
        parser.error("--requests must be >= 1 and --clients between 1 and --requests")
    latencies, outcomes = request_latencies(arguments.url.rstrip("/"), arguments.requests, arguments.clients)
    print(json.dumps({"latencies_s": latencies, "outcomes": dict(outcomes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
