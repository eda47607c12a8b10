"""A model repository whose loading waits for the test: its manifest.json is a FIFO until the test lets it go.

A server started on it stays "loading" (readyz 503) for exactly as long as the test wants, however fast the
machine loads models; no production code knows about it.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from tests.support.timing import wait_until


class HeldRepository:
    """A copy of a repository whose manifest.json blocks every reader until `release()`."""

    def __init__(self, source: Path, folder: Path) -> None:
        self.path = Path(shutil.copytree(source, folder))
        self._manifest = self.path / "manifest.json"
        self._content = self._manifest.read_bytes()
        self._manifest.unlink()
        os.mkfifo(self._manifest)

    def release(self) -> None:
        """Let the loader that waits on the FIFO read the manifest; later readers find a plain file."""
        descriptor: list[int] = []

        def reader_waiting() -> bool:
            try:
                descriptor.append(os.open(self._manifest, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: no reader has opened the FIFO yet
                    raise
            return bool(descriptor)

        wait_until(reader_waiting, "the server opening its repository's manifest")
        plain = self.path / "manifest.json.plain"
        plain.write_bytes(self._content)
        os.replace(plain, self._manifest)  # the waiting reader keeps the FIFO; any later one reads the file
        os.set_blocking(descriptor[0], True)
        with os.fdopen(descriptor[0], "wb") as fifo:
            fifo.write(self._content)
