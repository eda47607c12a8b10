"""Follow Orthanc's change feed from where the worker stopped and process each StableStudy.

The position advances past a study only in the same atomic state write that records its SR, after the SR
is stored: killed at any moment, the worker finds the change again on restart and adopts the SR if it
was stored.
"""

from __future__ import annotations

import logging
from pathlib import Path

from classifiers.pipeline import Pipeline
from pacs.archive import OrthancArchive, StudyArchive
from pacs.client import OrthancClient, OrthancError, OrthancNotFound
from pacs.processor import process_study
from pacs.state import StudyRecord, WorkerState, save_state

logger = logging.getLogger(__name__)

PAGE_SIZE = 100


def follow_changes(client: OrthancClient, pipeline: Pipeline, state: WorkerState, state_path: Path,
                   page_size: int = PAGE_SIZE) -> int:
    """Process every change after `state.last_change` until the feed is done; returns the studies changed."""
    num_changed, archive = 0, OrthancArchive(client)
    while True:
        page = client.get_json(f"/changes?since={state.last_change}&limit={page_size}")
        for change in page["Changes"]:
            if change["ChangeType"] == "StableStudy" and handle_study(archive, pipeline, state, change["ID"]):
                num_changed += 1
            state.last_change = max(state.last_change, int(change["Seq"]))
            if change["ChangeType"] == "StableStudy":
                save_state(state_path, state)
        state.last_change = max(state.last_change, int(page["Last"]))
        save_state(state_path, state)
        if page["Done"] or not page["Changes"]:
            return num_changed


def handle_study(client: StudyArchive, pipeline: Pipeline, state: WorkerState, study_id: str) -> bool:
    """Process one stable study and record what was done in `state` (not yet saved); True when recorded."""
    try:
        record = process_study(client, pipeline, study_id, state.studies.get(study_id))
    except OrthancNotFound:
        logger.info("study %s: no longer in the archive; nothing to do", study_id)
        return False
    except OrthancError:
        raise
    except Exception as error:  # noqa: BLE001 - one odd study must not stop the feed (nor crash-loop a service)
        # Only the error's type: a library's message may quote header values (patient attributes).
        logger.error("study %s: skipped, it could not be processed (%s); see the study in the archive",
                     study_id, type(error).__name__)
        record = StudyRecord(tuple(sorted(client.read_study(study_id).radiographs)),
                             skipped=f"error: {type(error).__name__}")
    if record is None:
        return False
    state.studies[study_id] = record
    return True
