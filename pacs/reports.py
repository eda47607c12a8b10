"""The worker's own SRs in a study: fetched from the archive, read by classifiers.outputs.sr_reader."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from classifiers.outputs.sr_reader import ReportSummary, referenced_instances, summarise_report
from classifiers.outputs.sr_reader import is_service_series as is_worker_series
from pacs.archive import StudyArchive

__all__ = ["ReportSummary", "WorkerReport", "fetch_worker_report", "is_worker_series", "summarise_report"]


@dataclass(frozen=True)
class WorkerReport:
    """One SR this service wrote into the study: its archive id, its dataset, the instances it scored."""

    orthanc_id: str
    dataset: Dataset
    referenced_instances: frozenset[str]  # SOP instance UIDs of its Source image items


def fetch_worker_report(client: StudyArchive, instance_id: str) -> WorkerReport:
    """Download one of the worker's SRs (either format) and read the instances it references."""
    dataset = pydicom.dcmread(io.BytesIO(client.fetch_instance(instance_id)))
    return WorkerReport(instance_id, dataset, referenced_instances(dataset))
