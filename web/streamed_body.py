"""A request body sent without Content-Length (chunked): read up to the limit, refused with 413 one byte past it."""

from __future__ import annotations

import io
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge


class LimitedStreamedBody(io.RawIOBase):
    """wsgi.input of a streamed body: raises RequestEntityTooLarge as soon as more than `limit` bytes arrive.

    werkzeug's own limit (LimitedStream with is_max) only stops reading at the limit, so `get_data()`
    returned the first `limit` bytes of a larger body as if they were all of it (a 415 or 400 instead of
    413). Here the byte past the limit is the error, and nothing after it is read.
    """

    def __init__(self, stream: Any, limit: int) -> None:
        super().__init__()
        self.stream = stream
        self.limit = limit
        self.received = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer`, at most one byte past the limit, and refuse the body if that byte exists."""
        data = self.stream.read(min(len(buffer), self.limit + 1 - self.received))
        self.received += len(data)
        if self.received > self.limit:
            raise RequestEntityTooLarge()
        buffer[: len(data)] = data
        return len(data)

    def exhaust(self) -> bytes:
        """Read what is left (as werkzeug's LimitedStream.exhaust; 413 if the body passes the limit)."""
        return self.readall()
