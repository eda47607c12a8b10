"""The worker's state file: where it stopped in Orthanc's change feed and what it did with each study.

Written atomically (a temporary file in the same folder, fsync, rename), so a kill leaves the old or the
new state, never half of one. It holds Orthanc's study ids and SOP instance UIDs, no patient attribute.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

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


@dataclass
class WorkerState:
    """The last change-feed sequence number handled and the record of every study done."""

    last_change: int = 0
    studies: dict[str, StudyRecord] = field(default_factory=dict)
    # DICOMweb mode (pacs.dicomweb_follower): the date (YYYYMMDD, UTC) the last poll began, and per Study
    # Instance UID the number of instances QIDO-RS reported when the worker last looked at the study.
    last_poll: str = ""
    seen: dict[str, int] = field(default_factory=dict)


def load_state(path: Path) -> WorkerState:
    """Read the state file; a missing file is a fresh start (from the beginning of the change feed)."""
    try:
        document = json.loads(path.read_text())
        studies = {study_id: StudyRecord(**{**record, "instances": tuple(record["instances"])})
                   for study_id, record in document["studies"].items()}
        seen = {str(study_uid): int(count) for study_uid, count in document.get("seen", {}).items()}
        return WorkerState(int(document["last_change"]), studies, str(document.get("last_poll", "")), seen)
    except FileNotFoundError:
        return WorkerState()
    except OSError as error:
        raise StateError(f"cannot read the state file {path} ({error.strerror}); check its permissions") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StateError(f"the state file {path} is not a worker state; move it away to start over"
                         " (studies already scored keep their SR: the worker adopts it)") from None


def save_state(path: Path, state: WorkerState) -> None:
    """Write the state atomically."""
    document = {"format_version": FORMAT_VERSION, "last_change": state.last_change,
                "studies": {study_id: asdict(record) for study_id, record in state.studies.items()},
                "last_poll": state.last_poll, "seen": state.seen}
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
