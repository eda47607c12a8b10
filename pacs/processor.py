"""One Orthanc study: keep its radiographs, score them in process, store the SR back (once per image set).

Logs name studies and instances by their Orthanc ids only (hashes of UIDs), never a patient attribute.
"""

from __future__ import annotations

import logging

from classifiers.errors import ClassifierError
from classifiers.outputs.dicom_outputs import build_dicom_outputs, scoring_backend
from classifiers.pipeline import Pipeline
from classifiers.results import StudyResult, ViewInput
from classifiers.study_request import StudyRequest
from pacs.archive import StudyArchive, StudyContents
from pacs.reports import WorkerReport, fetch_worker_report, summarise_report
from pacs.state import StudyRecord

logger = logging.getLogger(__name__)

# Modalities a log line may name (PS3.3 C.7.3.1.1.1 defined terms); any other value is logged as "other".
KNOWN_MODALITIES = frozenset({"AR", "AU", "BDUS", "BI", "BMD", "CR", "CT", "DG", "DOC", "DX", "ECG", "EPS", "ES",
                              "GM", "HC", "HD", "IO", "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "MG", "MR", "NM",
                              "OAM", "OCT", "OP", "OPM", "OPT", "OT", "PR", "PT", "PX", "REG", "RF", "RG", "RTDOSE",
                              "RTIMAGE", "RTPLAN", "RTRECORD", "RTSTRUCT", "SEG", "SM", "SMR", "SR", "SRF", "TG",
                              "US", "VA", "XA", "XC"})


def process_study(client: StudyArchive, pipeline: Pipeline, study_id: str,
                  previous: StudyRecord | None, heatmaps: bool = False) -> StudyRecord | None:
    """Score a study whose radiographs changed since `previous` and store its SR; None when nothing changed.

    An SR of the worker already in the study for the same images is adopted, not written again; a new SR
    lists the worker's earlier SRs of the study as its predecessors (they stay in the archive). The study goes
    through the pipeline's one study path (admission included); an unreadable instance is left out and
    named in the log, the rest is scored.
    """
    contents = client.read_study(study_id)
    instances = tuple(sorted(contents.radiographs))
    if previous is not None and previous.instances == instances:
        logger.debug("study %s: already done for its %d radiograph instances", study_id, len(instances))
        return None
    if not instances:
        modalities = ", ".join(_loggable(modality) for modality in contents.other_modalities) or "none"
        logger.info("study %s: skipped, no projection radiograph (modalities: %s)", study_id, modalities)
        return StudyRecord(instances, study_date=contents.study_date, skipped="no projection radiograph")
    reports = [fetch_worker_report(client, report_id) for report_id in contents.worker_report_ids]
    # Every radiograph already in an SR of the worker: adopted without downloading or scoring anything.
    same = _report_for(reports, frozenset(instances))
    if same is not None:
        return _adopt(contents, instances, same)
    logger.info("study %s: fetching and scoring %d radiograph instances", study_id, len(instances))
    views = tuple(ViewInput(instance_id, client.fetch_instance(instance_id))
                  for instance_id in contents.radiographs.values())
    try:
        result = pipeline.run(StudyRequest(views, explain=heatmaps, skip_unreadable=True))
    except ClassifierError as error:
        logger.warning("study %s: skipped, cannot be scored (%s)", study_id, error)
        return StudyRecord(instances, study_date=contents.study_date, skipped=type(error).__name__)
    for view in result.unreadable:
        logger.warning("study %s: instance left out, %s", study_id, view.message)
    scored = frozenset(view.dicom.sop_instance_uid for view in result.images if view.dicom is not None)
    same = _report_for(reports, scored)
    if same is not None:
        return _adopt(contents, instances, same)
    return _store_report(client, contents, instances, result, reports, scoring_backend(pipeline, result), heatmaps)


def _loggable(modality: str) -> str:
    """A modality as the log may name it: a defined term of DICOM, else "other" (the sender wrote the value)."""
    return modality if modality in KNOWN_MODALITIES else "other"


def _report_for(reports: list[WorkerReport], scored: frozenset[str]) -> WorkerReport | None:
    """The worker's SR that references exactly these instances, if one is in the study."""
    return next((report for report in reports if report.referenced_instances == scored), None)


def _adopt(contents: StudyContents, instances: tuple[str, ...], report: WorkerReport) -> StudyRecord:
    """Log and record a study whose SR for these images is already in the archive."""
    logger.info("study %s: its SR for these images is already in the archive (instance %s); adopted",
                contents.study_id, report.orthanc_id)
    return _adopted_record(instances, contents, report)


def _store_report(client: StudyArchive, contents: StudyContents, instances: tuple[str, ...],
                  result: StudyResult, reports: list[WorkerReport], backend: str | None,
                  heatmaps: bool = False) -> StudyRecord:
    """Build the SR (superseding the worker's earlier ones; with heatmaps, a capture and a presentation state
    per view), store them in the archive (the SR first) and return the study's record."""
    outputs = build_dicom_outputs(result, explained=heatmaps, backend=backend, instance_number=len(reports) + 1,
                                  previous_versions=[earlier.dataset for earlier in reports])
    report = outputs.report
    stored_id, *_heatmap_ids = [client.store(instance) for instance in outputs.instances_bytes()]
    logger.info("study %s: SR stored (instance %s): %s %.3f %s%s%s", contents.study_id, stored_id,
                result.body_part, result.abnormality, result.label, f" ({result.triage})" if result.triage else "",
                f", superseding {len(reports)} earlier SR(s)" if reports else "")
    return StudyRecord(instances, sr_sop_instance_uid=str(report.SOPInstanceUID), sr_orthanc_id=stored_id,
                       study_date=contents.study_date, body_part=result.body_part,
                       abnormality=round(result.abnormality, 6), label=result.label, triage=result.triage)


def _adopted_record(instances: tuple[str, ...], contents: StudyContents, report: WorkerReport) -> StudyRecord:
    """The record of a study whose SR was found in the archive."""
    summary = summarise_report(report.dataset)
    return StudyRecord(instances, sr_sop_instance_uid=str(report.dataset.SOPInstanceUID),
                       sr_orthanc_id=report.orthanc_id, study_date=contents.study_date,
                       body_part=summary.body_part, abnormality=summary.abnormality, label=summary.label,
                       triage=summary.triage)
