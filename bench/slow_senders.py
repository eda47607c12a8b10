"""Slow senders: connections that send a request head, then trickle its body, to test a front such as nginx.

    python -m bench.slow_senders http://127.0.0.1:8080 [--count 50] [--seconds 30] [--source 127.0.0.2]

Each connection announces a 1 MB PNG body and sends 8 bytes of it every 0.5 s, until `seconds` have passed,
this process is stopped, or the server closes the connection. `--source` makes them come from another
loopback address than the clients being measured (a front's per-address limits then tell them apart).
One thread trickles on every connection, so thousands fit. It prints one line once every connection is
open ("50 slow senders connected"), so a test or a person can start measuring then. A service without a front
gives its threads to these connections; behind nginx (deploy/nginx.conf) they cost only nginx connections.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence

HEAD = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 1000000\r\n\r\n")
CHUNK = b"\x89PNG\r\n\x1a\n"
CHUNK_INTERVAL_S = 0.5


def open_slow_connection(address: tuple[str, int], source: str | None = None) -> socket.socket:
    """A connection to `address` (from `source`) that has sent a request head announcing a body it has not sent."""
    connection = socket.create_connection(address, timeout=5, source_address=(source, 0) if source else None)
    connection.sendall(HEAD)
    connection.setblocking(False)
    return connection


def trickle(connections: list[socket.socket], stop: threading.Event, seconds: float) -> None:
    """Send every body a few bytes at a time until `stop` or `seconds`; a connection the server closed is dropped."""
    deadline = time.monotonic() + seconds
    open_connections = list(connections)
    while open_connections and not stop.is_set() and time.monotonic() < deadline:
        for connection in list(open_connections):
            try:
                connection.send(CHUNK)
            except OSError:  # closed by the server (or its buffer full: as good as stalled)
                open_connections.remove(connection)
                connection.close()
        stop.wait(CHUNK_INTERVAL_S)
    for connection in connections:
        connection.close()


def parse_address(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL; ValueError saying what is expected."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "http" and parts.hostname and parts.port is not None:
            return parts.hostname, parts.port
    except ValueError:  # a malformed host, or a port that is not a number
        pass
    raise ValueError(f"expected a URL such as http://127.0.0.1:8080, got {url!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Open the slow connections, say so on one line, and trickle until the time is up or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.slow_senders", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the service or its front, e.g. http://127.0.0.1:8080")
    parser.add_argument("--count", type=int, default=50, help="slow connections to open (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each trickles at most (default 30)")
    parser.add_argument("--source", default=None, help="local address to connect from, e.g. 127.0.0.2")
    arguments = parser.parse_args(argv)
    try:
        address = parse_address(arguments.url)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        connections = [open_slow_connection(address, arguments.source) for _ in range(arguments.count)]
    except OSError as error:
        print(f"bench.slow_senders: cannot connect to {arguments.url}: {error}", file=sys.stderr)
        return 1
    print(f"{len(connections)} slow senders connected", flush=True)
    trickle(connections, stop, arguments.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
