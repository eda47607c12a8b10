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
