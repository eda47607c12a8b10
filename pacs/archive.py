"""What the worker needs of an archive, and its Orthanc REST implementation (the DICOMweb one: pacs.dicomweb).

`pacs.processor.process_study` takes any `StudyArchive`: it reads a study's contents, fetches instance
bytes and stores the SR through these three methods only, so one study is processed the same way
whichever archive holds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pacs.client import OrthancClient

if TYPE_CHECKING:
    from pacs.processor import StudyContents


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


class OrthancArchive:
    """A `StudyArchive` over Orthanc's REST API."""

    def __init__(self, client: OrthancClient) -> None:
        self.client = client

    def read_study(self, study_id: str) -> StudyContents:
        """List the study's series and instances (three GETs, see pacs.processor.read_study)."""
        from pacs.processor import read_study  # the processor imports this module's protocol

        return read_study(self.client, study_id)

    def fetch_instance(self, instance_id: str) -> bytes:
        """GET /instances/{id}/file."""
        return self.client.get_bytes(f"/instances/{instance_id}/file")

    def store(self, data: bytes) -> str:
        """POST /instances; Orthanc's id of the stored instance."""
        return str(self.client.post_dicom(data)["ID"])
