"""A small Orthanc REST client (urllib): basic authentication, retries with back-off, typed errors."""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

# Seconds slept before each retry of a request that found Orthanc unreachable or answering 5xx.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
TIMEOUT_S = 60.0

Result = TypeVar("Result")


class OrthancError(Exception):
    """Orthanc answered a request with an error we cannot retry; the message says what to do."""


class OrthancUnreachable(OrthancError):
    """Orthanc did not answer (or kept answering 5xx) after every retry."""


class OrthancUnauthorized(OrthancError):
    """Orthanc refused the credentials (HTTP 401 or 403)."""


class OrthancNotFound(OrthancError):
    """The resource is not (or no longer) in Orthanc (HTTP 404)."""


class OrthancClient:
    """GET and POST against one Orthanc's REST API."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S) -> None:
        self.url = url.rstrip("/")
        self.retry_delays_s = tuple(retry_delays_s)
        self._authorization = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._authorization = f"Basic {token}"

    def get_json(self, path: str) -> Any:
        """GET a JSON resource (path starts with "/", e.g. "/changes?since=0")."""
        return json.loads(self.request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        """GET a resource's raw bytes (e.g. "/instances/{id}/file", a DICOM file)."""
        return self.request("GET", path)

    def post_dicom(self, data: bytes) -> dict[str, Any]:
        """Store a DICOM file (POST /instances); Orthanc answers its ID and Status ("Success", "AlreadyStored")."""
        return json.loads(self.request("POST", "/instances", data, "application/dicom"))

    def answers(self) -> bool:
        """Whether Orthanc answers GET /system now (one try, no retry): tells an outage from one bad resource."""
        try:
            self._send("GET", "/system", None, None)
        except OrthancError:
            return False
        return True

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        """One request, retried after each delay of `retry_delays_s` while Orthanc is unreachable or says 5xx.

        Raises:
            OrthancUnreachable: no answer (or 5xx) after the last retry.
            OrthancUnauthorized: 401/403, never retried.
            OrthancNotFound: 404.
            OrthancError: any other 4xx.
        """
        return retried(lambda: self._send(method, path, body, content_type), self.retry_delays_s)

    def _send(self, method: str, path: str, body: bytes | None, content_type: str | None) -> bytes:
        """One attempt, HTTP errors turned into the typed errors of this module."""
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if self._authorization:
            request.add_header("Authorization", self._authorization)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise _http_error(error.code, method, self._route(path)) from None
        except (OSError, urllib.error.URLError) as error:
            reason = getattr(error, "reason", None) or error
            raise OrthancUnreachable(f"Orthanc at {self.url} is unreachable ({reason}); check that it runs and"
                                     " that --orthanc names its HTTP port") from None

    def _route(self, path: str) -> str:
        """The path without its query, for messages."""
        return path.split("?", 1)[0]


def retried(attempt: Callable[[], Result], delays_s: Sequence[float],
            sleep: Callable[[float], None] = time.sleep) -> Result:
    """Run `attempt`, again after each delay of `delays_s` while it raises OrthancUnreachable; the last one raises.

    Orthanc's REST client and the DICOMweb archive (whose DicomwebUnreachable is an OrthancUnreachable) share it.
    """
    for delay_s in (*delays_s, None):
        try:
            return attempt()
        except OrthancUnreachable as error:
            if delay_s is None:
                raise
            logger.debug("%s; retrying in %.1f s", error, delay_s)
            sleep(delay_s)
    raise AssertionError("unreachable")  # the loop returns or raises


def _http_error(status: int, method: str, route: str) -> OrthancError:
    """The typed error of an HTTP status."""
    if status in (401, 403):
        return OrthancUnauthorized(f"Orthanc refused the credentials (HTTP {status}); set --username/--password"
                                   " or ORTHANC_USERNAME/ORTHANC_PASSWORD to a user of its RegisteredUsers")
    if status == 404:
        return OrthancNotFound(f"{method} {route}: not found in Orthanc (HTTP 404)")
    if status >= 500:
        return OrthancUnreachable(f"{method} {route}: Orthanc answered HTTP {status} (server error)")
    return OrthancError(f"{method} {route}: Orthanc answered HTTP {status}; check the Orthanc version and log")
