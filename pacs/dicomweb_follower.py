"""The DICOMweb mode's poll: QIDO-RS for CR/DX studies since the last poll, each new or grown study processed.

The equivalent of pacs.follower for an archive without a change feed. A study is looked at when QIDO-RS
reports an instance count other than the one in the state's seen set; it is then processed exactly as in
the Orthanc mode (pacs.follower.handle_study, pacs.processor.process_study): the SR is stored before the
state records it, and a worker killed in between adopts the SR it finds in the study on restart.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from pathlib import Path

from classifiers.pipeline import Pipeline
from pacs.client import OrthancError
from pacs.dicomweb import DicomwebArchive
from pacs.follower import handle_study
from pacs.state import WorkerState, load_state, save_state

logger = logging.getLogger(__name__)

LOOKBACK_DAYS = 1  # StudyDate is the modality's local date: a study dated yesterday may arrive today
MAX_BACKOFF_S = 300.0
DATE_FORMAT = "%Y%m%d"


def utc_now() -> datetime.datetime:
    """The current time, UTC (the default clock)."""
    return datetime.datetime.now(datetime.UTC)


def follow_studies(archive: DicomwebArchive, pipeline: Pipeline, state: WorkerState, state_path: Path,
                   now: datetime.datetime, lookback_days: int = LOOKBACK_DAYS, heatmaps: bool = False) -> int:
    """One poll: process every CR/DX study whose instance count changed; returns the studies changed."""
    since = _since(state.last_poll, lookback_days)
    num_changed = 0
    for study in archive.find_studies(since):
        if study.num_instances is not None and state.seen.get(study.study_uid) == study.num_instances:
            continue
        if handle_study(archive, pipeline, state, study.study_uid, heatmaps):
            num_changed += 1
        if study.num_instances is not None:
            state.seen[study.study_uid] = study.num_instances
        save_state(state_path, state)
    state.last_poll = now.strftime(DATE_FORMAT)
    save_state(state_path, state)
    return num_changed


def run_once(archive: DicomwebArchive, pipeline: Pipeline, state_path: Path, now: datetime.datetime,
             lookback_days: int = LOOKBACK_DAYS, heatmaps: bool = False) -> int:
    """One poll from the state file; returns the studies scored or skipped."""
    state = load_state(state_path)
    num_changed = follow_studies(archive, pipeline, state, state_path, now, lookback_days, heatmaps)
    logger.info("done: %d studies scored or skipped, %d studies seen", num_changed, len(state.seen))
    return num_changed


def poll(archive: DicomwebArchive, pipeline: Pipeline, state_path: Path, poll_seconds: float,
         lookback_days: int = LOOKBACK_DAYS, clock: Callable[[], datetime.datetime] = utc_now,
         sleep: Callable[[float], None] = time.sleep, max_polls: int | None = None, heatmaps: bool = False) -> None:
    """Poll every `poll_seconds` (forever, or `max_polls` times); archive errors are logged and waited out."""
    backoff_s, num_polls = poll_seconds, 0
    while max_polls is None or num_polls < max_polls:
        num_polls += 1
        try:
            follow_studies(archive, pipeline, load_state(state_path), state_path, clock(), lookback_days, heatmaps)
            backoff_s = poll_seconds
        except OrthancError as error:
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
            logger.warning("%s; next try in %.0f s", error, backoff_s)
        sleep(backoff_s)


def _since(last_poll: str, lookback_days: int) -> str:
    """The StudyDate from which to search: the last poll's date less the look-back; "" (all) on a first poll."""
    if not last_poll:
        return ""
    try:
        start = datetime.datetime.strptime(last_poll, DATE_FORMAT) - datetime.timedelta(days=lookback_days)
    except ValueError:
        logger.warning("the state's last poll date is not YYYYMMDD; searching every date this time")
        return ""
    return start.strftime(DATE_FORMAT)
