"""Latencies of normal requests: a few clients, each POSTing the same 2-view study one after another.

    python -m bench.latency http://127.0.0.1:8080 [--requests 60] [--clients 2]

Prints one JSON object: {"latencies_s": [...], "errors": [...]}, the latencies of the studies answered 200 and
one line for each that was not (its status, or the connection error's name). It runs in a process of its own, so
what it measures is the service (and its front), not a busy caller: a test process that has run hundreds of
tests holds a large heap and leftover threads, whose garbage collections and GIL hand-offs would land in the
figures. Pair it with bench.slow_senders to see what slow clients do to everyone else.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bench.restarts import post_study
from bench.workload import run_concurrently

TIME_LIMIT_S = 120.0  # no new study is sent after this


class NotAnswered200(Exception):
    """A study answered with another status, or not at all (the outcome's name)."""


def request_latencies(url: str, requests: int, clients: int) -> tuple[list[float], list[str]]:
    """`clients` threads POST `requests` studies to `url`; the latencies of the 200s, and the other outcomes."""

    def post(_: int) -> None:
        outcome = post_study(url)
        if outcome != "200":
            raise NotAnswered200(outcome)

    _, latencies, errors = run_concurrently(post, requests, clients, TIME_LIMIT_S)
    return latencies, errors


def main(argv: Sequence[str] | None = None) -> int:
    """Send the requests and print their latencies and errors as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the service or its front, e.g. http://127.0.0.1:8080")
    parser.add_argument("--requests", type=int, default=60, help="studies to send in all (default 60)")
    parser.add_argument("--clients", type=int, default=2, help="clients sending at once (default 2)")
    arguments = parser.parse_args(argv)
    if arguments.requests < 1 or not 1 <= arguments.clients <= arguments.requests:
        parser.error("--requests must be >= 1 and --clients between 1 and --requests")
    latencies, errors = request_latencies(arguments.url.rstrip("/"), arguments.requests, arguments.clients)
    print(json.dumps({"latencies_s": latencies, "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
