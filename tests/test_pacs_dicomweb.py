"""The worker's DICOMweb mode (pacs.dicomweb) against a real Orthanc with Debian's DICOMweb plugin.

The test reaches Orthanc through its /dicom-web/ endpoints only (STOW-RS to upload, QIDO-RS and WADO-RS
to read back), with its own dicomweb-client, independent of the worker's adapter.
"""

from __future__ import annotations

import datetime
import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage, generate_uid

from bench.launch import free_port
from pacs.cli import EXIT_DONE, EXIT_STATE, EXIT_UNAUTHORIZED, EXIT_UNREACHABLE, main
from pacs.dicomweb import DicomwebArchive, make_session
from pacs.dicomweb_follower import poll
from pacs.state import load_state
from tests.support.dicom_factory import LEAK_MARKERS, make_dataset, synthetic_radiograph, to_bytes
from tests.support.orthanc_server import PASSWORD, USERNAME, Orthanc, running_orthanc
from tests.support.sr_items import content_value, referenced_instances

FIRST_DAY = datetime.datetime(2024, 1, 3, 8, 0, tzinfo=datetime.UTC)  # the day after the factory's StudyDate


class TestClock:
    """A clock the test moves: `days` after FIRST_DAY."""

    def __init__(self) -> None:
        self.days = 0

    def __call__(self) -> datetime.datetime:
        return FIRST_DAY + datetime.timedelta(days=self.days)


@pytest.fixture
def orthanc(tmp_path: Path):
    """A fresh Orthanc with the DICOMweb plugin per test."""
    with running_orthanc(tmp_path / "orthanc", dicomweb=True) as server:
        yield server


@pytest.fixture
def dicomweb(orthanc: Orthanc) -> DICOMwebClient:
    """The test's own DICOMweb client of that Orthanc."""
    session = make_session(USERNAME, PASSWORD)
    return DICOMwebClient(orthanc.dicomweb_url, session=session)


def radiograph(study_uid: str, seed: int, modality: str = "DX", **options) -> pydicom.Dataset:
    """One synthetic wrist instance of the study (DX or CR), with the factory's patient attributes."""
    pixels = np.round(synthetic_radiograph("XR_WRIST", seed=seed) * 255).astype(np.uint8)
    if modality == "CR":
        options.setdefault("extra", {"SOPClassUID": ComputedRadiographyImageStorage})
    return make_dataset(pixels, study_uid=study_uid, modality=modality, **options)


def stow(dicomweb: DICOMwebClient, datasets: list[pydicom.Dataset]) -> list[bytes]:
    """STOW-RS the datasets; their Part 10 bytes (what /predict is given)."""
    files = [to_bytes(dataset) for dataset in datasets]
    dicomweb.store_instances([pydicom.dcmread(io.BytesIO(data)) for data in files])
    return files


def run_worker(orthanc: Orthanc, models: Path, state: Path, clock: TestClock, *extra: str) -> int:
    """The worker's main() in process, --dicomweb --once."""
    return main(["--dicomweb", orthanc.dicomweb_url, "--models", str(models), "--state", str(state), "--once",
                 "--username", USERNAME, "--password", PASSWORD, *extra], clock=clock)


def study_reports(dicomweb: DICOMwebClient, study_uid: str) -> list[pydicom.Dataset]:
    """Every SR of the study, found by QIDO-RS and read by WADO-RS, oldest instance number first."""
    reports = [dataset for series in dicomweb.search_for_series(study_uid, search_filters={"Modality": "SR"})
               for dataset in dicomweb.retrieve_series(study_uid, series["0020000E"]["Value"][0])]
    return sorted(reports, key=lambda report: int(report.InstanceNumber))






def sop_uids(files: list[bytes]) -> set[str]:
    return {str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID) for data in files}


def predicted(client, files: list[bytes]) -> float:
    """POST /predict's study abnormality for the same files."""
    answer = client.post("/predict", data={"image": [(io.BytesIO(data), f"{index}.dcm")
                                                     for index, data in enumerate(files)]}).get_json()
    return answer["study"]["abnormality"]


def test_new_dx_and_cr_studies_get_one_sr_each_with_the_services_score(
        orthanc, dicomweb, tiny_repository, client, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO)
    dx_uid, cr_uid = generate_uid(), generate_uid()
    dx_files = stow(dicomweb, [radiograph(dx_uid, seed) for seed in (1, 2)])
    cr_files = stow(dicomweb, [radiograph(cr_uid, 3, modality="CR")])
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state, TestClock()) == EXIT_DONE
    for study_uid, files in ((dx_uid, dx_files), (cr_uid, cr_files)):
        [report] = study_reports(dicomweb, study_uid)
        assert content_value(report, "Probability") == pytest.approx(predicted(client, files), abs=1e-6)
        assert str(report.StudyInstanceUID) == study_uid
        assert referenced_instances(report) == sop_uids(files)
        record = load_state(state).studies[study_uid]
        assert record.sr_sop_instance_uid == str(report.SOPInstanceUID)
        assert record.sr_orthanc_id == f"{study_uid}/{report.SeriesInstanceUID}/{report.SOPInstanceUID}"
    saved = load_state(state)
    assert saved.last_poll == "20240103"
    assert saved.seen == {dx_uid: 2, cr_uid: 1}  # QIDO-RS's instance counts when the worker looked
    output = capsys.readouterr()
    for marker in LEAK_MARKERS:
        assert marker not in output.out + output.err + caplog.text


def test_restart_scores_nothing_twice_with_or_without_the_state(orthanc, dicomweb, tiny_repository, tmp_path,
                                                                  caplog):
    study_uid = generate_uid()
    stow(dicomweb, [radiograph(study_uid, 4)])
    state, clock = tmp_path / "state.json", TestClock()
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    [report] = study_reports(dicomweb, study_uid)
    first = load_state(state).studies[study_uid]
    clock.days = 1  # the next poll searches from the last poll's date less a day: the study is listed again
    caplog.set_level(logging.INFO)
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    assert "done: 0 studies scored or skipped" in caplog.text  # its SR grew the study; the same images
    assert load_state(state).seen[study_uid] == 2
    state.unlink()  # as if killed after the SR was stored, before the state was written
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    assert [str(found.SOPInstanceUID) for found in study_reports(dicomweb, study_uid)] == [
        str(report.SOPInstanceUID)]
    adopted = load_state(state).studies[study_uid]
    assert adopted.sr_sop_instance_uid == first.sr_sop_instance_uid == str(report.SOPInstanceUID)
    assert adopted.abnormality == pytest.approx(content_value(report, "Probability"))
    assert "its SR for these images is already in the archive" in caplog.text


def test_one_more_image_gives_a_new_sr_superseding_the_first(orthanc, dicomweb, tiny_repository, client,
                                                               tmp_path):
    study_uid = generate_uid()
    files = stow(dicomweb, [radiograph(study_uid, 5)])
    state, clock = tmp_path / "state.json", TestClock()
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    [first] = study_reports(dicomweb, study_uid)
    files += stow(dicomweb, [radiograph(study_uid, 6)])
    clock.days = 1
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    earlier, newer = study_reports(dicomweb, study_uid)
    assert str(earlier.SOPInstanceUID) == str(first.SOPInstanceUID)
    predecessors = [str(instance.ReferencedSOPInstanceUID) for study in newer.PredecessorDocumentsSequence
                    for series in study.ReferencedSeriesSequence for instance in series.ReferencedSOPSequence]
    assert predecessors == [str(first.SOPInstanceUID)]
    assert int(newer.InstanceNumber) == 2
    assert referenced_instances(newer) == sop_uids(files)
    assert content_value(newer, "Probability") == pytest.approx(predicted(client, files), abs=1e-6)
    assert load_state(state).studies[study_uid].sr_sop_instance_uid == str(newer.SOPInstanceUID)


def test_ct_study_is_not_fetched_nor_given_an_sr(orthanc, dicomweb, tiny_repository, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    ct_uid, dx_uid = generate_uid(), generate_uid()
    stow(dicomweb, [radiograph(ct_uid, 7, modality="CT", body_part=None, extra={"SOPClassUID": CTImageStorage})])
    stow(dicomweb, [radiograph(dx_uid, 8)])
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state, TestClock()) == EXIT_DONE
    assert study_reports(dicomweb, ct_uid) == []
    assert len(study_reports(dicomweb, dx_uid)) == 1
    saved = load_state(state)
    assert set(saved.studies) == set(saved.seen) == {dx_uid}
    assert ct_uid not in caplog.text


def test_study_dated_before_the_look_back_is_left_to_a_wider_look_back(orthanc, dicomweb, tiny_repository,
                                                                         tmp_path):
    state, clock = tmp_path / "state.json", TestClock()
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE  # empty archive: sets the last poll
    old_uid = generate_uid()
    stow(dicomweb, [radiograph(old_uid, 9, extra={"StudyDate": "20231201"})])
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    assert study_reports(dicomweb, old_uid) == []  # StudyDate 20231201 < 20240102, the last poll less a day
    assert run_worker(orthanc, tiny_repository, state, clock, "--lookback-days", "40") == EXIT_DONE
    assert len(study_reports(dicomweb, old_uid)) == 1


def test_polling_follows_the_test_clock_and_scores_what_arrives_between_polls(orthanc, dicomweb, tiny_pipeline,
                                                                              tmp_path):
    study_uid = generate_uid()
    stow(dicomweb, [radiograph(study_uid, 10)])
    state, clock, waits = tmp_path / "state.json", TestClock(), []
    archive = DicomwebArchive(orthanc.dicomweb_url, make_session(USERNAME, PASSWORD))

    def sleep(seconds: float) -> None:
        """Between polls: a day passes and the study receives one more image."""
        waits.append(seconds)
        if len(waits) == 1:
            clock.days = 1
            stow(dicomweb, [radiograph(study_uid, 11)])

    poll(archive, tiny_pipeline, state, 30.0, clock=clock, sleep=sleep, max_polls=2)
    assert waits == [30.0, 30.0]
    first, second = study_reports(dicomweb, study_uid)
    assert len(referenced_instances(first)) == 1 and len(referenced_instances(second)) == 2
    assert load_state(state).last_poll == "20240104"


def test_poll_waits_out_an_unreachable_archive_with_a_doubling_wait(tiny_pipeline, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # whatever level an earlier test left the root logger at
    waits: list[float] = []
    archive = DicomwebArchive(f"http://127.0.0.1:{free_port()}/dicom-web", retry_delays_s=(0.5,), sleep=waits.append)
    poll(archive, tiny_pipeline, tmp_path / "state.json", 10.0, clock=TestClock(), sleep=waits.append, max_polls=3)
    assert waits == [0.5, 20.0, 0.5, 40.0, 0.5, 80.0]  # one retry per request, then the poll's back-off
    assert "is unreachable (ConnectionError)" in caplog.text


@pytest.mark.parametrize("damage", ["half a state", "directory"])
def test_state_file_that_cannot_be_read_is_a_clear_exit_6(tiny_repository, tmp_path, capsys, damage):
    state = tmp_path / "state.json"
    if damage == "directory":
        state.mkdir()
    else:
        state.write_text('{"last_change": 0, "studies": {}, "seen": ["not", "counts"]}')
    code = main(["--dicomweb", f"http://127.0.0.1:{free_port()}/dicom-web", "--models", str(tiny_repository),
                 "--state", str(state), "--once"])
    assert code == EXIT_STATE
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"pacs: error: {'cannot read the state file' if damage == 'directory' else 'the state'}")


def test_state_file_that_cannot_be_written_is_a_clear_exit_6(orthanc, dicomweb, tiny_repository, tmp_path, capsys):
    stow(dicomweb, [radiograph(generate_uid(), 12)])
    state = Path("/proc/triage-test-state.json")  # reads as missing (a fresh start); nothing can be written there
    assert run_worker(orthanc, tiny_repository, state, TestClock()) == EXIT_STATE
    [line] = capsys.readouterr().err.strip().splitlines()  # its lock file cannot be made either: refused at start
    assert line.startswith("pacs: error: cannot create the lock file") and "choose a writable --state" in line


def test_wrong_password_and_stopped_service_are_exit_4_and_3(orthanc, tiny_repository, tmp_path, capsys):
    common = ["--models", str(tiny_repository), "--state", str(tmp_path / "s.json"), "--once"]
    assert main(["--dicomweb", orthanc.dicomweb_url, "--username", USERNAME, "--password", "wrong",
                 *common]) == EXIT_UNAUTHORIZED
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert main(["--dicomweb", url, "--retries", "0", *common]) == EXIT_UNREACHABLE
    refused, unreachable = capsys.readouterr().err.strip().splitlines()
    assert refused.startswith("pacs: error: the DICOMweb service refused the credentials (HTTP 401)")
    assert unreachable == (f"pacs: error: the DICOMweb service at {url} is unreachable (ConnectionError); check"
                           " that it runs and that --dicomweb names its base URL")


class _TokenRecorder(BaseHTTPRequestHandler):
    """A QIDO-RS endpoint with no study that records each request's Authorization header."""

    headers_seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.headers_seen.append(self.headers.get("Authorization", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *arguments) -> None:
        """Quiet."""


def test_bearer_token_file_is_read_at_each_request(tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        archive = DicomwebArchive(f"http://127.0.0.1:{server.server_port}/v1/dicomWeb",
                                  make_session(token_file=token))
        archive.check()
        token.write_text("refreshed-token\n")  # as a refresher (gcloud, az) rewrites it
        assert archive.find_studies("20240101") == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert _TokenRecorder.headers_seen == ["Bearer first-token", "Bearer refreshed-token",
                                           "Bearer refreshed-token"]  # find_studies: one query per modality


def test_own_sr_is_recognised_from_series_metadata_when_qido_leaves_its_tags_out(
        orthanc, dicomweb, tiny_repository, tmp_path, monkeypatch):
    study_uid = generate_uid()
    stow(dicomweb, [radiograph(study_uid, 13)])
    state, clock = tmp_path / "state.json", TestClock()
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    # As an archive that indexes few attributes answers (Azure's DICOM service): no Manufacturer, no
    # SeriesDescription in QIDO-RS; the worker reads them from the SR series' WADO-RS metadata instead.
    monkeypatch.setattr("pacs.dicomweb.INSTANCE_FIELDS", ("Modality", "StudyDate"))
    metadata_reads = []
    original = DICOMwebClient.retrieve_series_metadata
    monkeypatch.setattr(DICOMwebClient, "retrieve_series_metadata",
                        lambda self, *uids: metadata_reads.append(uids) or original(self, *uids))
    state.unlink()
    assert run_worker(orthanc, tiny_repository, state, clock) == EXIT_DONE
    [report] = study_reports(dicomweb, study_uid)
    assert load_state(state).studies[study_uid].sr_sop_instance_uid == str(report.SOPInstanceUID)
    assert metadata_reads == [(study_uid, str(report.SeriesInstanceUID))]
