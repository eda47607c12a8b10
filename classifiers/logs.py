"""Quiet, useful logs: what a user needs (models, backend, device, ready), library noise only when asked."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Python loggers of libraries that report internals (tf.function retracing, absl start-up) at WARNING.
LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py", "tf2onnx", "onnxruntime")
# DICOM libraries whose log records and warnings quote header values (pydicom: element values, "Unknown
# encoding '...'"; highdicom: SOP Instance UIDs at INFO): dropped at every level, DEBUG included.
PATIENT_DATA_LIBRARIES = ("pydicom", "highdicom", "pynetdicom")
PATIENT_DATA_WARNING_MODULES = r"(pydicom|highdicom|pynetdicom)(\.|$)"


def quiet_dicom_libraries() -> None:
    """Drop pydicom's and highdicom's log records and warnings; idempotent, cheap enough to call per decode.

    A header value may be patient data, and these libraries put values in their texts. Called where DICOM
    is read or written: test runners and `warnings.catch_warnings` blocks reset the warning filters.
    """
    for name in PATIENT_DATA_LIBRARIES:
        library_logger = logging.getLogger(name)
        library_logger.setLevel(logging.CRITICAL + 1)
        library_logger.propagate = False  # child loggers with their own level stop here too
        if not library_logger.handlers:
            library_logger.addHandler(logging.NullHandler())  # found a handler: logging's lastResort stays silent
    if not any(action == "ignore" and getattr(module, "pattern", module) == PATIENT_DATA_WARNING_MODULES
               for action, _, _, module, _ in warnings.filters):
        warnings.filterwarnings("ignore", module=PATIENT_DATA_WARNING_MODULES)


def safe_error_text(error: BaseException) -> str:
    """"Type: message" for this package's typed errors (their texts never quote header values), else the type."""
    from classifiers.errors import ClassifierError

    return f"{type(error).__name__}: {error}" if isinstance(error, ClassifierError) else type(error).__name__


def describe_exception(error: BaseException) -> str:
    """The exception's type and where it was raised (file, line, function), its causes too; never its message.

    Exception texts from pydicom and highdicom can quote header values ("Unable to convert '1927-08-15' to
    'DA' object"); the frames are enough to find the fault.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        where = "; ".join(f"{_short_path(frame.filename)}:{frame.lineno} in {frame.name}" for frame in frames[-8:])
        parts.append(f"{type(current).__module__}.{type(current).__qualname__} at {where or 'unknown'}")
        current = current.__cause__ or current.__context__
    return " <- caused by ".join(parts)


def _short_path(filename: str) -> str:
    """The last two parts of a source path (package/module.py), enough to find the line."""
    return "/".join(filename.replace(os.sep, "/").split("/")[-2:])


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
