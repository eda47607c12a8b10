"""What the worker needs of an archive, and its Orthanc REST implementation (the DICOMweb one: pacs.dicomweb).

`pacs.processor.process_study` takes any `StudyArchive`: it reads a study's contents, fetches instance
bytes and stores the SR through these three methods only, so one study is processed the same way
whichever archive holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from classifiers.decoding.dicom_header import RADIOGRAPH_MODALITIES, SECONDARY_CAPTURE_MODALITIES
from classifiers.outputs.sr_reader import is_service_series
from pacs.client import OrthancClient

IMAGE_MODALITIES = (*RADIOGRAPH_MODALITIES, *SECONDARY_CAPTURE_MODALITIES)


@dataclass(frozen=True)
class StudyContents:
    """What Orthanc holds of one study: its radiograph instances, other modalities, the worker's SRs."""

    study_id: str
    study_date: str
    radiographs: dict[str, str]  # SOP instance UID -> Orthanc instance id
    other_modalities: tuple[str, ...]
    worker_report_ids: tuple[str, ...]  # Orthanc instance ids of the worker's SRs


def read_study(client: OrthancClient, study_id: str) -> StudyContents:
    """List a study's series and instances (three GETs, no file downloaded)."""
    study = client.get_json(f"/studies/{study_id}")
    series_list = client.get_json(f"/studies/{study_id}/series")
    instances = client.get_json(f"/studies/{study_id}/instances")
    image_series = {series["ID"] for series in series_list
                    if series["MainDicomTags"].get("Modality", "").upper() in IMAGE_MODALITIES}
    worker_series = [series for series in series_list if is_service_series(series["MainDicomTags"])]
    others = {series["MainDicomTags"].get("Modality", "") for series in series_list
              if series["ID"] not in image_series and series not in worker_series}
    return StudyContents(
        study_id=study_id,
        study_date=study["MainDicomTags"].get("StudyDate", ""),
        radiographs={instance["MainDicomTags"]["SOPInstanceUID"]: instance["ID"] for instance in instances
                     if instance["ParentSeries"] in image_series},
        other_modalities=tuple(sorted(others)),
        worker_report_ids=tuple(instance for series in worker_series for instance in series["Instances"]),
    )


class StudyArchive(Protocol):
    """An archive's studies as the worker sees them; ids are the archive's own (Orthanc ids, DICOMweb paths)."""

    def read_study(self, study_id: str) -> StudyContents:
        """The study's radiograph instances, other modalities and the worker's earlier SRs (no file fetched)."""
        ...

    def fetch_instance(self, instance_id: str) -> bytes:
        """One instance's DICOM file (Part 10 bytes)."""
        ...

    def store(self, data: bytes) -> str:
        """Store one DICOM file in its study; returns the stored instance's id."""
        ...

    def answers(self) -> bool:
        """Whether the archive answers at all now (one try): tells an outage from one bad study."""
        ...


class OrthancArchive:
    """A `StudyArchive` over Orthanc's REST API."""

    def __init__(self, client: OrthancClient) -> None:
        self.client = client

    def read_study(self, study_id: str) -> StudyContents:
        """List the study's series and instances (three GETs, see read_study)."""
        return read_study(self.client, study_id)

    def fetch_instance(self, instance_id: str) -> bytes:
        """GET /instances/{id}/file."""
        return self.client.get_bytes(f"/instances/{instance_id}/file")

    def store(self, data: bytes) -> str:
        """POST /instances; Orthanc's id of the stored instance."""
        return str(self.client.post_dicom(data)["ID"])

    def answers(self) -> bool:
        """GET /system answers (one try)."""
        return self.client.answers()
