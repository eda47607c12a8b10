"""The worker's state file: where it stopped in Orthanc's change feed and what it did with each study.

Written atomically (a temporary file in the same folder, fsync, rename), so a kill leaves the old or the
new state, never half of one. It holds Orthanc's study ids and SOP instance UIDs, no patient attribute.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from classifiers.repository.entries import TRIAGE_CATEGORIES

FORMAT_VERSION = 1


class StateError(Exception):
    """The state file cannot be read or written; the message names it and what to do."""


@dataclass(frozen=True)
class StudyRecord:
    """What the worker did with one Orthanc study: the instances it looked at and the SR it stored (or why not)."""

    instances: tuple[str, ...]  # SOP instance UIDs of the study's radiograph instances, sorted
    sr_sop_instance_uid: str | None = None
    sr_orthanc_id: str | None = None
    study_date: str = ""
    body_part: str = ""
    abnormality: float | None = None
    label: str = ""
    skipped: str | None = None  # why no SR was written (no radiograph, nothing readable)
    moved_aside: bool = False  # Orthanc kept failing on it: not scored, listed first in the worklist
    # Flagged, indeterminate or low at the expert's operating points; None without them (and in older state files).
    triage: str | None = None


@dataclass
class WorkerState:
    """The last change-feed sequence number handled and the record of every study done."""

    last_change: int = 0
    studies: dict[str, StudyRecord] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)  # study id -> tries the archive failed, retried each pass
    # DICOMweb mode (pacs.dicomweb_follower): the date (YYYYMMDD, UTC) the last poll began, and per Study
    # Instance UID the number of instances QIDO-RS reported when the worker last looked at the study.
    last_poll: str = ""
    seen: dict[str, int] = field(default_factory=dict)


# The type each StudyRecord field must have in the file (JSON: lists for tuples, None for null).
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "instances": (list,), "sr_sop_instance_uid": (str, type(None)), "sr_orthanc_id": (str, type(None)),
    "study_date": (str,), "body_part": (str,), "abnormality": (float, int, type(None)), "label": (str,),
    "skipped": (str, type(None)), "moved_aside": (bool,), "triage": (str, type(None)),
}


def load_state(path: Path) -> WorkerState:
    """Read the state file; a missing file is a fresh start (from the beginning of the change feed).

    Raises:
        StateError: the file cannot be read, or is not a state this worker wrote (any wrong type or value).
    """
    try:
        return parse_state(json.loads(path.read_text()))
    except FileNotFoundError:
        return WorkerState()
    except OSError as error:
        raise StateError(f"cannot read the state file {path} ({error.strerror}); check its permissions") from None
    except (ValueError, RecursionError) as error:
        raise StateError(f"the state file {path} is not a worker state; move it away to start over (studies already"
                         f" scored keep their SR: the worker adopts it); {_reason(error)}") from None


def _reason(error: Exception) -> str:
    """What is wrong with the file, in a few words (our own messages; JSON's are about the syntax)."""
    return str(error) if isinstance(error, StateFormatError) else "not valid JSON"


class StateFormatError(ValueError):
    """A state document whose structure or types are wrong; the message names the key."""


def parse_state(document: Any) -> WorkerState:
    """Check every key and type of a state document and build the WorkerState (StateFormatError otherwise)."""
    if not isinstance(document, dict):
        raise StateFormatError("the document is not an object")
    last_change = document.get("last_change")
    if type(last_change) is not int or last_change < 0:
        raise StateFormatError("'last_change' is not an integer >= 0")
    studies, failing = document.get("studies"), document.get("failing", {})
    if not isinstance(studies, dict):
        raise StateFormatError("'studies' is not an object")
    if not isinstance(failing, dict) or not all(type(tries) is int and tries > 0 for tries in failing.values()):
        raise StateFormatError("'failing' is not an object of positive integers")
    last_poll, seen = document.get("last_poll", ""), document.get("seen", {})
    if not isinstance(last_poll, str) or not (last_poll == "" or (len(last_poll) == 8 and last_poll.isdigit())):
        raise StateFormatError("'last_poll' is not a date YYYYMMDD")
    if not isinstance(seen, dict) or not all(type(count) is int and count >= 0 for count in seen.values()):
        raise StateFormatError("'seen' is not an object of instance counts")
    return WorkerState(last_change, {study_id: parse_record(study_id, record) for study_id, record in studies.items()},
                       dict(failing), last_poll, dict(seen))


def parse_record(study_id: str, record: Any) -> StudyRecord:
    """One study's record, every field of its type (StateFormatError naming the study and the field)."""
    if not isinstance(record, dict) or "instances" not in record or not set(record) <= set(_RECORD_TYPES):
        raise StateFormatError(f"the record of study {study_id[:80]!r} is not a study record")
    for name, value in record.items():
        if not isinstance(value, _RECORD_TYPES[name]) or (isinstance(value, bool) and bool not in _RECORD_TYPES[name]):
            raise StateFormatError(f"study {study_id[:80]!r}: {name!r} has the wrong type")
    if not all(isinstance(uid, str) for uid in record["instances"]):
        raise StateFormatError(f"study {study_id[:80]!r}: 'instances' is not a list of strings")
    abnormality = record.get("abnormality")
    if abnormality is not None and not (math.isfinite(abnormality) and 0 <= abnormality <= 1):
        raise StateFormatError(f"study {study_id[:80]!r}: 'abnormality' is not a probability")
    if record.get("triage") not in (None, *TRIAGE_CATEGORIES):
        raise StateFormatError(f"study {study_id[:80]!r}: 'triage' is not one of {', '.join(TRIAGE_CATEGORIES)}")
    return StudyRecord(**{**record, "instances": tuple(record["instances"])})


def save_state(path: Path, state: WorkerState) -> None:
    """Write the state atomically."""
    document = {"format_version": FORMAT_VERSION, "last_change": state.last_change,
                "studies": {study_id: asdict(record) for study_id, record in state.studies.items()},
                "failing": state.failing, "last_poll": state.last_poll, "seen": state.seen}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
            json.dump(document, temporary, indent=1, sort_keys=True)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary.name, path)
    except OSError as error:
        raise StateError(f"cannot write the state file {path} ({error.strerror}); choose a writable --state") \
            from None


def lock_path(path: Path) -> Path:
    """The lock file beside a state file (the state file itself is replaced at each write, so not lockable)."""
    return path.with_name(path.name + ".lock")


@contextmanager
def locked_state(path: Path) -> Iterator[None]:
    """Hold the state file's lock (fcntl.flock on `<state>.lock`) for the block: one worker per state file.

    Raises:
        StateError: another process holds the lock (the message names the lock and that process), or the
            lock file cannot be made.
    """
    lock = lock_path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a+")
    except OSError as error:
        raise StateError(f"cannot create the lock file {lock} ({error.strerror}); choose a writable --state") \
            from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(20).strip() or "unknown"
            raise StateError(f"another worker holds the lock {lock} (pid {holder}) on the state file {path}; "
                             "run one worker per state file") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
