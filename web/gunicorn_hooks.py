"""gunicorn's own error answers (414, 431, 400 for a request it cannot parse) in the API's JSON error shape.

gunicorn answers these before the request reaches Flask, with an HTML page of its own. `install` replaces
the function that writes that page, in the worker (gunicorn.conf.py calls it from `post_fork`). Only
the standard library is imported here: this runs in gunicorn's process, outside the app.
"""

from __future__ import annotations

import json
import socket

# status -> (code, message). gunicorn's own text is not echoed: it can quote the request line.
GUNICORN_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "the HTTP request could not be parsed; send a well-formed HTTP/1.1 request"),
    403: ("forbidden", "the request was refused by the server's proxy settings"),
    414: ("uri_too_long", "the request line is longer than the server accepts (4094 bytes by default); "
                          "send options in the body, not the URL"),
    417: ("expectation_failed", "the Expect header is not supported; send the body without it"),
    431: ("request_header_fields_too_large", "too many or too large headers (at most 100 fields of "
                                             "8190 bytes by default); send fewer headers"),
    501: ("not_implemented", "this transfer coding is not supported; send the body with Content-Length"),
}


def json_error_bytes(status: int, reason: str) -> bytes:
    """The whole HTTP answer (status line, headers, JSON body) for one of gunicorn's own errors."""
    code, message = GUNICORN_ERRORS.get(status, ("http_error", "the server could not handle the request"))
    body = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for gunicorn.util.write_error: the same answer, as JSON."""
    from gunicorn import util

    util.write_nonblock(sock, json_error_bytes(status_int, reason))


def install() -> None:
    """Make gunicorn write its own error answers as JSON (idempotent)."""
    from gunicorn import util

    util.write_error = write_json_error


LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")
OPEN_SERVICE_WARNING = (
    "!!! the service listens on {addresses}, beyond loopback, WITHOUT API keys: anyone who can reach the "
    "port can send studies, read /models and /metrics. Set TRIAGE_API_KEYS or TRIAGE_API_KEY_FILE "
    "(docs/API.md, 'Access'), or bind 127.0.0.1 behind a proxy that authenticates. !!!"
)


def binds_beyond_loopback(addresses: list[str]) -> list[str]:
    """The bind addresses (host:port, unix:path, fd://n) that other machines may reach."""
    open_addresses = []
    for address in addresses:
        if address.startswith(("unix:", "fd://")):
            continue
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
        if host.startswith("127.") or host in LOOPBACK_HOSTS:
            continue
        open_addresses.append(address)
    return open_addresses


def open_service_warning(addresses: list[str], environ: dict[str, str]) -> str | None:
    """The loud start-up warning when the service is reachable beyond loopback without keys, else None."""
    has_keys = bool(environ.get("TRIAGE_API_KEYS", "").strip() or environ.get("TRIAGE_API_KEY_FILE", "").strip())
    open_addresses = binds_beyond_loopback(addresses)
    if has_keys or not open_addresses:
        return None
    return OPEN_SERVICE_WARNING.format(addresses=", ".join(open_addresses))
