"""The node's loop: received instances into the spool, complete studies scored, staged SRs sent (with retries).

Exactly once per set of images: an SR is staged in the spool (with the instances it scored) before it is
sent and marked sent after the destination stored it, so a kill at any moment leads, at restart, either to
scoring again (nothing staged yet) or to sending the same SR, same SOP Instance UID, again.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from classifiers.errors import ClassifierError
from classifiers.pipeline import Pipeline
from pacs.node.completion import Clock, RetrySchedule, StableStudies
from pacs.node.scoring import score_study
from pacs.node.scp import SCORED_SOP_CLASSES, STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, describe_sop_class
from pacs.node.sender import Destination, SendFailed, send_files
from pacs.node.spool import ReportReference, Spool, StudyState

logger = logging.getLogger(__name__)

MAX_IDLE_S = 1.0  # the loop looks at the spool at least this often
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class NodeSettings:
    """Where results go and the node's timings."""

    ae_title: str
    destination: Destination
    stable_s: float = 10.0
    retry_first_s: float = 5.0
    retry_max_s: float = 300.0
    retention_s: float = 30 * 86400.0
    ssl_context: ssl.SSLContext | None = None  # for the destination
    timeout_s: float = 60.0
    heatmaps: bool = False  # send each view's heatmap as a Secondary Capture with the SR


class Node:
    """Receives instances, scores complete studies, sends their SRs; `step` does due work, `serve` loops."""

    def __init__(self, pipeline: Pipeline, spool: Spool, settings: NodeSettings, clock: Clock = time.monotonic):
        self.pipeline, self.spool, self.settings, self.clock = pipeline, spool, settings, clock
        self.stable = StableStudies(settings.stable_s, clock)
        self.retries = RetrySchedule(settings.retry_first_s, settings.retry_max_s, clock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_prune: float | None = None

    def recover(self) -> None:
        """At start: tidy each spooled study, watch those with unscored instances, send what was staged."""
        for study_id in self.spool.studies():
            self.spool.clean(study_id)
            if self.spool.pending_files(study_id):
                self.retries.now(study_id)
            if any((self.spool.root / study_id).glob("*.dcm")):
                self.stable.touch(study_id)
        logger.info("spool %s: %d studies found", self.spool.root, len(self.spool.studies()))

    def receive(self, sop_class_uid: str, sop_instance_uid: str, study_uid: str, data: bytes) -> int:
        """One C-STORE: spool a scored storage class, accept and drop the others; the C-STORE status."""
        study_id = self.spool.spool_id(study_uid)
        if sop_class_uid not in SCORED_SOP_CLASSES:
            logger.info("study %s: %s instance accepted, not scored", study_id, describe_sop_class(sop_class_uid))
            return STATUS_SUCCESS
        try:
            self.spool.write_instance(study_uid, sop_instance_uid, data)
        except OSError as error:
            logger.error("study %s: cannot write an instance to the spool (%s); answered 'out of resources'",
                         study_id, error.strerror)
            return STATUS_OUT_OF_RESOURCES
        self.stable.touch(study_id)
        self._wake.set()
        return STATUS_SUCCESS

    def step(self) -> None:
        """Score the studies complete now and try the sends that are due."""
        for study_id in self.stable.due():
            self._guarded(self.complete, study_id)
        for study_id in self.retries.due():
            self._guarded(self.send, study_id)
        now = self.clock()
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            removed = self.spool.prune(self.settings.retention_s)
            if removed:
                logger.info("spool: %d finished studies older than the retention removed", len(removed))

    def complete(self, study_id: str) -> None:
        """A study is complete: score its new images and stage its SR, or drop images already scored."""
        state = self.spool.read_state(study_id)
        instances = self.spool.instances(study_id)
        if not set(instances) - state.scored:
            if instances:
                logger.info("study %s: %d instance(s) received again, already scored; no new SR",
                            study_id, len(instances))
            if state.pending is None:
                self.spool.delete_scored_instances(state)
            return
        logger.info("study %s: complete, %d instance(s) received; scoring", study_id, len(instances))
        handled = frozenset(instances)
        try:
            scored = score_study(self.pipeline, list(instances.values()), _predecessors(state),
                                 self.settings.heatmaps)
        except ClassifierError as error:
            logger.warning("study %s: not scored: %s", study_id, error)
            self.spool.mark_skipped(state, handled, type(error).__name__)
            return
        if scored is None:
            logger.warning("study %s: not scored, none of its %d instances is readable", study_id, len(instances))
            self.spool.mark_skipped(state, handled, "no readable instance")
            return
        report = scored.report
        reference = ReportReference(str(report.SOPClassUID), str(report.SOPInstanceUID),
                                    str(report.SeriesInstanceUID))
        self.spool.stage_results(state, scored.files(), reference, handled)
        result = scored.result
        logger.info("study %s: scored %d view(s): %s %.3f %s%s", study_id, len(result.images), result.body_part,
                    result.abnormality, result.label,
                    f", superseding {len(state.reports)} earlier SR(s)" if state.reports else "")
        self.retries.now(study_id)
        self.send(study_id)

    def send(self, study_id: str) -> None:
        """Send the study's staged SR; on failure schedule the next try (doubling delay)."""
        paths = self.spool.pending_files(study_id)
        if not paths:
            self.retries.done(study_id)
            return
        destination = self.settings.destination
        try:
            send_files(destination, self.settings.ae_title, paths, self.settings.ssl_context, self.settings.timeout_s)
        except (SendFailed, OSError, ssl.SSLError) as error:
            delay, tries = self.retries.failed(study_id)
            logger.warning("study %s: SR not sent (%s); try %d failed, next in %.1f s", study_id, error, tries, delay)
            return
        self.retries.done(study_id)
        self.spool.mark_sent(study_id)
        logger.info("study %s: SR sent to %s%s", study_id, destination,
                    f" with {len(paths) - 1} heatmap capture(s)" if len(paths) > 1 else "")

    def _guarded(self, work: Callable[[str], None], study_id: str) -> None:
        """Run one study's work; an unexpected error is logged (type only) and the study left in the spool."""
        try:
            work(study_id)
        except Exception as error:  # one bad study must not stop the node; it is tried again at restart
            logger.error("study %s: failed (%s), left in the spool until the next start; --log-level debug"
                         " shows the traceback", study_id, type(error).__name__)
            logger.debug("study %s: traceback", study_id, exc_info=True)

    def serve(self) -> None:
        """Recover the spool, then do due work until `stop` (waiting on an event between steps)."""
        self.recover()
        while not self._stop.is_set():
            self.step()
            waits = [wait for wait in (self.stable.seconds_to_next(), self.retries.seconds_to_next())
                     if wait is not None]
            self._wake.wait(min([MAX_IDLE_S, *waits]))
            self._wake.clear()

    def stop(self) -> None:
        """Make `serve` return after the step in progress."""
        self._stop.set()
        self._wake.set()


def _predecessors(state: StudyState) -> list[Dataset]:
    """The sent SRs of the study as the minimal datasets an SR's PredecessorDocumentsSequence is built from."""
    predecessors = []
    for reference in state.reports:
        dataset = Dataset()
        dataset.StudyInstanceUID = state.study_instance_uid
        dataset.SeriesInstanceUID = reference.series_instance_uid
        dataset.SOPClassUID = reference.sop_class_uid
        dataset.SOPInstanceUID = reference.sop_instance_uid
        predecessors.append(dataset)
    return predecessors
