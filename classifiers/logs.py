"""Quiet, useful logs: what a user needs (models, backend, device, ready), library noise only when asked."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# Python loggers of libraries that report internals (tf.function retracing, absl start-up) at WARNING;
# highdicom and pynetdicom log UIDs at INFO (highdicom: each SR's source instances).
LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py", "tf2onnx", "onnxruntime", "highdicom", "pynetdicom")


def configure_logging(level: str = "INFO") -> None:
    """Send log lines to stderr at `level`; libraries' own warnings only at DEBUG (`--verbose`)."""
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"log level {level!r} unknown; use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=numeric_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(numeric_level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric_level <= logging.DEBUG else logging.ERROR)
    if numeric_level > logging.DEBUG:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING after start-up


@contextmanager
def native_output_logged(logger: logging.Logger) -> Iterator[None]:
    """Send what C++ libraries write to stderr (fd 2) inside the block to `logger` at DEBUG.

    TensorFlow prints its CUDA probing and oneDNN notices from C++ at import and device listing, before
    any Python setting can reach its logger; on a CPU machine a user reads them as faults. Keep the block
    short: other threads' stderr output inside it goes to the log at DEBUG too.
    """
    if logger.isEnabledFor(logging.DEBUG):
        yield  # Asked for everything: let the libraries print as they do.
        return
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                logger.debug("%s", line)
