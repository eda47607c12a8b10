"""The node's durable spool: one folder per study, the one place the node writes patient data.

    SPOOL/.key                     the key of the spool ids (random, 0600)
    SPOOL/<study id>/<id>.dcm      an instance as received (written atomically: temporary file, fsync, rename)
    SPOOL/<study id>/state.json    the SOP Instance UIDs already scored, the SRs written, the SR not yet sent
    SPOOL/<study id>/outbox/<SR id>/N.dcm  results staged for the destination (the SR, heatmap captures),
                                   deleted once it has them

Study and instance ids are keyed hashes of their UIDs (logs name studies by them). Everything is created
0700 / 0600. An instance file is deleted once an SR that scored it has been sent; state.json stays (it
holds UIDs only, no patient attribute) so that the same images sent again give no second SR, until
`prune` removes it after the retention period.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pydicom

STATE_FILE = "state.json"
OUTBOX = "outbox"
KEY_FILE = ".key"
TEMPORARY_PREFIX = ".tmp-"
ID_LENGTH = 16


@dataclass(frozen=True)
class ReportReference:
    """The UIDs of an SR the node wrote (what a superseding SR lists as its predecessor)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class StudyState:
    """What the node did with a study: instances scored, SRs written, the staged SR file not yet sent."""

    study_instance_uid: str
    scored: frozenset[str] = frozenset()
    reports: tuple[ReportReference, ...] = ()  # SRs sent, oldest first
    pending: ReportReference | None = None  # the SR staged in outbox/ (with any captures), not yet sent
    skipped: str | None = None  # why the last images could not be scored

    def to_json(self) -> dict:
        """The state.json form."""
        return {"study_instance_uid": self.study_instance_uid, "scored": sorted(self.scored),
                "reports": [vars(report) for report in self.reports],
                "pending": vars(self.pending) if self.pending else None,
                "skipped": self.skipped}

    @classmethod
    def from_json(cls, data: dict) -> StudyState:
        """Read the state.json form."""
        pending = data.get("pending")
        return cls(data["study_instance_uid"], frozenset(data["scored"]),
                   tuple(ReportReference(**report) for report in data["reports"]),
                   ReportReference(**pending) if pending else None, data.get("skipped"))


@dataclass
class Spool:
    """The spool folder; every write is atomic, so a kill at any moment leaves a consistent spool."""

    root: Path
    key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        key_path = self.root / KEY_FILE
        if not key_path.exists():
            _write_atomically(key_path, secrets.token_bytes(32))
        self.key = key_path.read_bytes()

    def spool_id(self, uid: str) -> str:
        """A short keyed hash of a UID: the name of its file or folder, and how logs name it."""
        return hmac.new(self.key, uid.encode(), hashlib.sha256).hexdigest()[:ID_LENGTH]

    def study_folder(self, study_uid: str) -> Path:
        """The folder of a study (not created)."""
        return self.root / self.spool_id(study_uid)

    def write_instance(self, study_uid: str, sop_instance_uid: str, data: bytes) -> Path:
        """Store one received instance (a DICOM Part 10 file) atomically; the same UID again replaces it."""
        folder = self.study_folder(study_uid)
        folder.mkdir(mode=0o700, exist_ok=True)
        if not (folder / STATE_FILE).exists():
            self.write_state(StudyState(study_uid))
        path = folder / f"{self.spool_id(sop_instance_uid)}.dcm"
        _write_atomically(path, data)
        return path

    def instances(self, study_id: str) -> dict[str, Path]:
        """The study's spooled instances: SOP Instance UID -> file."""
        found = {}
        for path in sorted((self.root / study_id).glob("*.dcm")):
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            found[str(header.SOPInstanceUID)] = path
        return found

    def studies(self) -> list[str]:
        """The ids of every study folder."""
        return sorted(path.name for path in self.root.iterdir() if path.is_dir() and (path / STATE_FILE).exists())

    def read_state(self, study_id: str) -> StudyState:
        """The study's state.json."""
        return StudyState.from_json(json.loads((self.root / study_id / STATE_FILE).read_text()))

    def write_state(self, state: StudyState) -> None:
        """Replace the study's state.json atomically."""
        path = self.study_folder(state.study_instance_uid) / STATE_FILE
        _write_atomically(path, json.dumps(state.to_json(), indent=1).encode())

    def outbox_folder(self, state: StudyState, reference: ReportReference) -> Path:
        """Where the staged results (the SR, then any heatmap captures) of the study wait until sent."""
        return self.study_folder(state.study_instance_uid) / OUTBOX / self.spool_id(reference.sop_instance_uid)

    def stage_results(self, state: StudyState, files: Sequence[bytes], reference: ReportReference,
                      scored: frozenset[str]) -> StudyState:
        """Put the result files in the outbox, then record them (and the instances scored) in state.json.

        Results still staged (never sent) are replaced: the new ones scored their images too.
        """
        folder = self.outbox_folder(state, reference)
        folder.parent.mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        for number, data in enumerate(files):
            _write_atomically(folder / f"{number}.dcm", data)
        staged = replace(state, scored=state.scored | scored, pending=reference, skipped=None)
        self.write_state(staged)
        if state.pending is not None and state.pending != reference:
            shutil.rmtree(self.outbox_folder(state, state.pending), ignore_errors=True)
        return staged

    def pending_files(self, study_id: str) -> list[Path]:
        """The staged result files of a study in sending order; empty when nothing waits."""
        state = self.read_state(study_id)
        if state.pending is None:
            return []
        return sorted(self.outbox_folder(state, state.pending).glob("*.dcm"), key=lambda path: int(path.stem))

    def mark_sent(self, study_id: str) -> StudyState:
        """The staged results reached the destination: record the SR, delete them and the instances scored."""
        state = self.read_state(study_id)
        if state.pending is None:
            return state
        sent = replace(state, reports=(*state.reports, state.pending), pending=None)
        self.write_state(sent)
        shutil.rmtree(self.outbox_folder(state, state.pending), ignore_errors=True)
        self.delete_scored_instances(sent)
        return sent

    def mark_skipped(self, state: StudyState, handled: frozenset[str], reason: str) -> StudyState:
        """Images that cannot be scored: remember them (no retry for the same images) and delete them."""
        skipped = replace(state, scored=state.scored | handled, skipped=reason)
        self.write_state(skipped)
        self.delete_scored_instances(skipped)
        return skipped

    def delete_scored_instances(self, state: StudyState) -> int:
        """Delete the instance files whose UIDs the state lists as scored; how many there were."""
        folder = self.study_folder(state.study_instance_uid)
        deleted = 0
        for uid in state.scored:
            path = folder / f"{self.spool_id(uid)}.dcm"
            if path.exists():
                path.unlink()
                deleted += 1
        return deleted

    def clean(self, study_id: str) -> None:
        """After a crash: remove temporary files and outbox folders that state.json does not name."""
        folder = self.root / study_id
        state = self.read_state(study_id)
        pending = None if state.pending is None else self.outbox_folder(state, state.pending)
        for path in [*folder.glob(f"{TEMPORARY_PREFIX}*"), *folder.glob(f"{OUTBOX}/*/{TEMPORARY_PREFIX}*")]:
            path.unlink()
        for staged in folder.glob(f"{OUTBOX}/*"):
            if staged != pending:
                shutil.rmtree(staged)

    def prune(self, retention_s: float, now: float | None = None) -> list[str]:
        """Remove the folders of studies with nothing spooled whose state is older than `retention_s`."""
        now = time.time() if now is None else now
        removed = []
        for study_id in self.studies():
            folder = self.root / study_id
            idle = not any(folder.glob("*.dcm")) and self.read_state(study_id).pending is None
            if idle and now - (folder / STATE_FILE).stat().st_mtime > retention_s:
                shutil.rmtree(folder)
                removed.append(study_id)
        return removed


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a 0600 file by temporary file, fsync and rename, then fsync the folder."""
    temporary = path.with_name(f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
