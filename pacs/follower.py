"""Follow Orthanc's change feed from where the worker stopped and process each StableStudy.

The position advances past a study only in the same atomic state write that records its SR (or records it
as failing), after the SR is stored: killed at any moment, the worker finds the change again on restart and
adopts the SR if it was stored. A study Orthanc fails on (5xx while Orthanc itself answers) is recorded as
failing and the feed goes on; it is tried again at the start of each pass, and moved aside (recorded, not
scored, listed first in the worklist) after MAX_STUDY_TRIES tries in all.
"""

from __future__ import annotations

import logging
from pathlib import Path

from classifiers.pipeline import Pipeline
from pacs.archive import OrthancArchive, StudyArchive
from pacs.client import OrthancClient, OrthancError, OrthancNotFound, OrthancUnauthorized
from pacs.processor import process_study
from pacs.state import StudyRecord, WorkerState, save_state

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_STUDY_TRIES = 3  # tries (each with the client's own retries) before a study Orthanc fails on is moved aside


def follow_changes(client: OrthancClient, pipeline: Pipeline, state: WorkerState, state_path: Path,
                   page_size: int = PAGE_SIZE, heatmaps: bool = False) -> int:
    """Retry the failing studies, then process every change after `state.last_change`; returns the studies changed."""
    archive = OrthancArchive(client)
    num_changed = retry_failing(archive, pipeline, state, state_path, heatmaps)
    while True:
        page = client.get_json(f"/changes?since={state.last_change}&limit={page_size}")
        for change in page["Changes"]:
            if change["ChangeType"] == "StableStudy" and handle_study(archive, pipeline, state, change["ID"], heatmaps):
                num_changed += 1
            state.last_change = max(state.last_change, int(change["Seq"]))
            if change["ChangeType"] == "StableStudy":
                save_state(state_path, state)
        state.last_change = max(state.last_change, int(page["Last"]))
        save_state(state_path, state)
        if page["Done"] or not page["Changes"]:
            return num_changed


def retry_failing(client: StudyArchive, pipeline: Pipeline, state: WorkerState, state_path: Path,
                  heatmaps: bool = False) -> int:
    """Try again each study the archive failed on in an earlier pass; returns the studies recorded."""
    num_changed = 0
    for study_id in list(state.failing):
        if handle_study(client, pipeline, state, study_id, heatmaps):
            num_changed += 1
        save_state(state_path, state)
    return num_changed


def handle_study(client: StudyArchive, pipeline: Pipeline, state: WorkerState, study_id: str,
                 heatmaps: bool = False) -> bool:
    """Process one stable study and record what was done in `state` (not yet saved); True when recorded."""
    try:
        record = process_study(client, pipeline, study_id, state.studies.get(study_id), heatmaps)
    except OrthancNotFound:
        state.failing.pop(study_id, None)
        logger.info("study %s: no longer in the archive; nothing to do", study_id)
        return False
    except OrthancUnauthorized:
        raise
    except OrthancError as error:
        if not client.answers():  # the archive itself is down or failing: wait it out, the study is not to blame
            raise
        return note_failure(client, state, study_id, error)
    except Exception as error:  # noqa: BLE001 - one odd study must not stop the feed (nor crash-loop a service)
        # Only the error's type: a library's message may quote header values (patient attributes).
        logger.error("study %s: skipped, it could not be processed (%s); see the study in the archive",
                     study_id, type(error).__name__)
        record = StudyRecord(tuple(sorted(client.read_study(study_id).radiographs)),
                             skipped=f"error: {type(error).__name__}")
    state.failing.pop(study_id, None)
    if record is None:
        return False
    state.studies[study_id] = record
    return True


def note_failure(client: StudyArchive, state: WorkerState, study_id: str, error: OrthancError) -> bool:
    """Count a try Orthanc failed on; at MAX_STUDY_TRIES record the study as moved aside (True), else False."""
    tries = state.failing.get(study_id, 0) + 1
    if tries < MAX_STUDY_TRIES:
        state.failing[study_id] = tries
        logger.warning("study %s: try %d of %d failed (%s); tried again on the next pass, the feed goes on",
                       study_id, tries, MAX_STUDY_TRIES, error)
        return False
    state.failing.pop(study_id, None)
    logger.error("study %s: moved aside after %d tries, not scored (%s); see the study in Orthanc, it is listed"
                 " first in the worklist", study_id, tries, error)
    try:
        contents = client.read_study(study_id)
        instances, study_date = tuple(sorted(contents.radiographs)), contents.study_date
    except OrthancError:  # the study's own listing fails too: an empty record, tried again if it changes
        instances, study_date = (), ""
    state.studies[study_id] = StudyRecord(instances, study_date=study_date, skipped=f"moved aside: {error}",
                                          moved_aside=True)
    return True
