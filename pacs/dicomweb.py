"""The worker's DICOMweb archive (dicomweb-client): QIDO-RS finds studies, WADO-RS fetches, STOW-RS stores.

A `StudyArchive` (pacs.archive) whose ids are DICOMweb paths: a study is its Study Instance UID, an
instance "study UID/series UID/SOP instance UID". Messages name the transaction, never a UID or any
other header value (QIDO-RS answers carry patient attributes: they are read here and go no further).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import requests
from dicomweb_client import DICOMwebClient

from pacs.archive import IMAGE_MODALITIES, StudyContents
from pacs.client import (
    RETRY_DELAYS_S,
    OrthancError,
    OrthancNotFound,
    OrthancUnauthorized,
    OrthancUnreachable,
    retried,
)
from pacs.reports import is_worker_series

QUERY_MODALITIES = ("CR", "DX")  # one QIDO-RS query each: a list in one query is not matched by every archive
PAGE_SIZE = 100
TIMEOUT_S = 60.0
STUDY_DATE, NUM_STUDY_INSTANCES = "00080020", "00201208"
MODALITY, MANUFACTURER, SERIES_DESCRIPTION = "00080060", "00080070", "0008103E"
SERIES_UID, SOP_INSTANCE_UID, STUDY_UID = "0020000E", "00080018", "0020000D"
# Asked of QIDO-RS for each instance of a study; an archive that leaves out Manufacturer or SeriesDescription
# (Azure's DICOM service returns only the attributes it indexes) is asked the SR series' WADO-RS metadata.
INSTANCE_FIELDS = ("Modality", "Manufacturer", "SeriesDescription", "StudyDate")

Result = TypeVar("Result")


class DicomwebError(OrthancError):
    """The DICOMweb service answered with an error we cannot retry; the message says what to do."""


class DicomwebUnreachable(DicomwebError, OrthancUnreachable):
    """The service did not answer (or kept answering 5xx) after every retry."""


class DicomwebUnauthorized(DicomwebError, OrthancUnauthorized):
    """The service refused the credentials (HTTP 401 or 403)."""


class DicomwebNotFound(DicomwebError, OrthancNotFound):
    """The resource is not (or no longer) in the archive (HTTP 404)."""


@dataclass(frozen=True)
class FoundStudy:
    """One study a QIDO-RS search returned: its UID, date and instance count (None if not reported)."""

    study_uid: str
    study_date: str
    num_instances: int | None


class BearerTokenFile(requests.auth.AuthBase):
    """`Authorization: Bearer <token>`, the token read from a file at each request (a refresher rewrites it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        try:
            token = self.path.read_text().strip()
        except OSError as error:
            raise DicomwebUnauthorized(f"cannot read the token file {self.path} ({error.strerror});"
                                       " check --token-file and its permissions") from None
        request.headers["Authorization"] = f"Bearer {token}"
        return request


def make_session(username: str | None = None, password: str | None = None,
                 token_file: Path | None = None) -> requests.Session:
    """An HTTP session with basic authentication, a bearer token file, or neither."""
    session = requests.Session()
    if token_file is not None:
        session.auth = BearerTokenFile(token_file)
    elif username is not None:
        session.auth = (username, password or "")
    return session


class DicomwebArchive:
    """Studies of a DICOMweb service (base URL: QIDO-RS, WADO-RS and STOW-RS below it)."""

    def __init__(self, url: str, session: requests.Session | None = None,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self.retry_delays_s = tuple(retry_delays_s)
        self.sleep = sleep
        self._client = DICOMwebClient(self.url, session=session or requests.Session(), timeout=TIMEOUT_S)
        self._client.set_http_retry_params(retry=False)  # retried here, with `sleep`, as the Orthanc client does
        logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # its INFO lines name UIDs

    def check(self) -> None:
        """One cheap QIDO-RS search, to fail fast on a wrong URL or credentials."""
        self._call("QIDO-RS studies", lambda: self._client.search_for_studies(limit=1))

    def answers(self) -> bool:
        """Whether one cheap QIDO-RS search succeeds now: tells an outage from one bad study."""
        try:
            self.check()
        except OrthancError:
            return False
        return True

    def find_studies(self, since: str = "") -> list[FoundStudy]:
        """CR and DX studies (StudyDate >= `since`, YYYYMMDD, when given), oldest first."""
        found: dict[str, FoundStudy] = {}
        for modality in QUERY_MODALITIES:
            filters = {"ModalitiesInStudy": modality, **({"StudyDate": f"{since}-"} if since else {})}
            answer = self._call("QIDO-RS studies", lambda filters=filters: self._client.search_for_studies(
                limit=PAGE_SIZE, fields=["NumberOfStudyRelatedInstances"], search_filters=filters,
                get_remaining=True))
            for item in answer:
                count = _value(item, NUM_STUDY_INSTANCES)
                study = FoundStudy(_value(item, STUDY_UID), _value(item, STUDY_DATE),
                                   int(count) if count != "" else None)
                found[study.study_uid] = study
        return sorted(found.values(), key=lambda study: (study.study_date, study.study_uid))

    def read_study(self, study_id: str) -> StudyContents:
        """The study's instances by one QIDO-RS search, grouped as pacs.archive.read_study groups Orthanc's."""
        instances = self._call("QIDO-RS instances", lambda: self._client.search_for_instances(
            study_id, fields=list(INSTANCE_FIELDS), get_remaining=True))
        if not instances:
            raise DicomwebNotFound("QIDO-RS instances: the study has no instance (deleted?)")
        radiographs: dict[str, str] = {}
        worker_reports: list[str] = []
        others: set[str] = set()
        series_tags: dict[str, dict[str, str]] = {}
        for item in instances:
            path = f"{study_id}/{_value(item, SERIES_UID)}/{_value(item, SOP_INSTANCE_UID)}"
            modality = str(_value(item, MODALITY)).upper()
            tags = {"Modality": modality, "Manufacturer": _value(item, MANUFACTURER),
                    "SeriesDescription": _value(item, SERIES_DESCRIPTION)}
            if modality == "SR" and not (tags["Manufacturer"] and tags["SeriesDescription"]):
                tags.update(self._series_tags(study_id, str(_value(item, SERIES_UID)), series_tags))
            if modality in IMAGE_MODALITIES:
                radiographs[str(_value(item, SOP_INSTANCE_UID))] = path
            elif is_worker_series(tags):
                worker_reports.append(path)
            else:
                others.add(modality)
        return StudyContents(study_id=study_id, study_date=str(_value(instances[0], STUDY_DATE)),
                             radiographs=radiographs, other_modalities=tuple(sorted(others)),
                             worker_report_ids=tuple(sorted(worker_reports)))

    def _series_tags(self, study_uid: str, series_uid: str, known: dict[str, dict[str, str]]) -> dict[str, str]:
        """Manufacturer and SeriesDescription from the series' WADO-RS metadata (once per series, in `known`)."""
        if series_uid not in known:
            metadata = self._call("WADO-RS series metadata",
                                  lambda: self._client.retrieve_series_metadata(study_uid, series_uid))
            first = metadata[0] if metadata else {}
            known[series_uid] = {"Manufacturer": str(_value(first, MANUFACTURER)),
                                 "SeriesDescription": str(_value(first, SERIES_DESCRIPTION))}
        return known[series_uid]

    def fetch_instance(self, instance_id: str) -> bytes:
        """WADO-RS: one instance in the transfer syntax it is stored in, as Part 10 bytes."""
        study_uid, series_uid, instance_uid = instance_id.split("/")
        dataset = self._call("WADO-RS instance", lambda: self._client.retrieve_instance(
            study_uid, series_uid, instance_uid, media_types=(("application/dicom", "*"),)))
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset)
        return buffer.getvalue()

    def store(self, data: bytes) -> str:
        """STOW-RS one DICOM file into its study; its DICOMweb path.

        Raises:
            DicomwebError: the service answered but listed the instance as failed.
        """
        dataset = pydicom.dcmread(io.BytesIO(data))
        study_uid = str(dataset.StudyInstanceUID)
        answer = self._call("STOW-RS", lambda: self._client.store_instances([dataset], study_instance_uid=study_uid))
        failed = answer.get("FailedSOPSequence", [])
        if failed:
            reason = failed[0].get("FailureReason", "none given")
            raise DicomwebError(f"STOW-RS: the service refused the SR (failure reason {reason}); see its log")
        return f"{study_uid}/{dataset.SeriesInstanceUID}/{dataset.SOPInstanceUID}"

    def _call(self, transaction: str, action: Callable[[], Result]) -> Result:
        """Run one dicomweb-client call, retried after each delay while unreachable or 5xx; typed errors out."""
        return retried(lambda: self._attempt(transaction, action), self.retry_delays_s, self.sleep)

    def _attempt(self, transaction: str, action: Callable[[], Result]) -> Result:
        """One attempt, requests' exceptions turned into the typed errors of this module."""
        try:
            return action()
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else 0
            raise _http_error(status, transaction) from None
        except requests.RequestException as error:
            raise DicomwebUnreachable(f"the DICOMweb service at {self.url} is unreachable ({type(error).__name__});"
                                      " check that it runs and that --dicomweb names its base URL") from None


def _value(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, "" when absent or empty."""
    values = item.get(tag, {}).get("Value") or [""]
    return values[0]


def _http_error(status: int, transaction: str) -> DicomwebError:
    """The typed error of an HTTP status."""
    if status in (401, 403):
        return DicomwebUnauthorized(
            f"the DICOMweb service refused the credentials (HTTP {status}); set --username/--password (or"
            " ORTHANC_USERNAME/ORTHANC_PASSWORD), or --token-file for a bearer token")
    if status == 404:
        return DicomwebNotFound(f"{transaction}: not found (HTTP 404); check that --dicomweb is the service's"
                                " base URL (its QIDO-RS, WADO-RS and STOW-RS paths below it)")
    if status >= 500:
        return DicomwebUnreachable(f"{transaction}: the DICOMweb service answered HTTP {status} (server error)")
    return DicomwebError(f"{transaction}: the DICOMweb service answered HTTP {status}; see its log")
