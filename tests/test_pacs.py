"""The Orthanc worker (pacs/) against a real Orthanc started by the test (tests/orthanc_server.py)."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, generate_uid

from bench.launch import ROOT, free_port
from pacs.cli import EXIT_DONE, EXIT_STATE, EXIT_UNAUTHORIZED, EXIT_UNREACHABLE, main
from pacs.state import StudyRecord, WorkerState, load_state, save_state
from tests.support.dicom_factory import LEAK_MARKERS, make_dataset, synthetic_radiograph, to_bytes
from tests.support.orthanc_server import PASSWORD, USERNAME, Orthanc, running_orthanc


@pytest.fixture
def orthanc(tmp_path: Path):
    """A fresh Orthanc per test (its own storage and change feed)."""
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server


def radiograph_bytes(study_uid: str, seed: int, size: tuple[int, int] = (160, 128), **options) -> bytes:
    """One synthetic wrist DX instance of the study, with the factory's patient attributes."""
    pixels = np.round(synthetic_radiograph("XR_WRIST", seed=seed, size=size) * 255).astype(np.uint8)
    return to_bytes(make_dataset(pixels, study_uid=study_uid, **options))


def upload_study(orthanc: Orthanc, files: list[bytes]) -> str:
    """Upload the files, wait until Orthanc calls the study stable; its Orthanc study id."""
    after = orthanc.last_change()
    study_ids = {orthanc.upload(data)["ParentStudy"] for data in files}
    assert len(study_ids) == 1
    study_id = study_ids.pop()
    orthanc.wait_stable(study_id, after)
    return study_id


def run_worker(orthanc: Orthanc, models: Path, state: Path, *extra: str) -> int:
    """The worker's main() in process, --once."""
    return main(["--orthanc", orthanc.url, "--models", str(models), "--state", str(state), "--once",
                 "--username", USERNAME, "--password", PASSWORD, *extra])


def study_reports(orthanc: Orthanc, study_id: str) -> list[pydicom.Dataset]:
    """Every SR in the study, read back from Orthanc, oldest instance number first."""
    reports = [pydicom.dcmread(io.BytesIO(orthanc.request("GET", f"/instances/{instance['ID']}/file")))
               for instance in orthanc.get(f"/studies/{study_id}/instances")
               if instance["MainDicomTags"].get("SOPInstanceUID") and _is_report(orthanc, instance)]
    return sorted(reports, key=lambda report: int(report.InstanceNumber))


def _is_report(orthanc: Orthanc, instance: dict) -> bool:
    return orthanc.get(f"/series/{instance['ParentSeries']}")["MainDicomTags"].get("Modality") == "SR"


def content_value(report: pydicom.Dataset, meaning: str):
    """A NUM item's number or a CODE item's meaning, by concept name (independent of pacs.reports)."""
    for item in report.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeMeaning == meaning:
            if item.ValueType == "NUM":
                return float(item.MeasuredValueSequence[0].NumericValue)
            return item.ConceptCodeSequence[0].CodeMeaning
    raise KeyError(meaning)


def referenced_instances(report: pydicom.Dataset) -> set[str]:
    return {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for item in report.ContentSequence if item.ValueType == "IMAGE"}


def test_sr_in_orthanc_has_the_services_score_and_a_second_run_adds_none(
        orthanc, tiny_repository, client, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO)
    study_uid = generate_uid()
    files = [radiograph_bytes(study_uid, seed) for seed in (1, 2)]
    study_id = upload_study(orthanc, files)
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    [report] = study_reports(orthanc, study_id)
    answer = client.post("/predict", data={"image": [(io.BytesIO(data), f"{index}.dcm")
                                                     for index, data in enumerate(files)]}).get_json()
    assert content_value(report, "Probability") == pytest.approx(answer["study"]["abnormality"], abs=1e-6)
    assert str(report.StudyInstanceUID) == study_uid
    assert referenced_instances(report) == {str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID) for data in files}
    # The SR itself makes the study change: wait for its StableStudy, then run again: nothing new.
    orthanc.wait_stable(study_id, after=load_state(state).last_change)
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    assert len(study_reports(orthanc, study_id)) == 1
    record = load_state(state).studies[study_id]
    assert record.sr_sop_instance_uid == str(report.SOPInstanceUID) and len(record.instances) == 2
    assert main(["worklist", "--state", str(state)]) == EXIT_DONE
    worklist = capsys.readouterr()
    assert f"{study_id}\t20240102\t" in worklist.out
    assert f"{answer['study']['abnormality']:.6f}" in worklist.out
    for marker in LEAK_MARKERS:
        assert marker not in worklist.out + worklist.err + caplog.text


def test_sr_stored_before_the_state_was_written_is_adopted_not_doubled(orthanc, tiny_repository, tmp_path):
    study_id = upload_study(orthanc, [radiograph_bytes(generate_uid(), 3)])
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    [report] = study_reports(orthanc, study_id)
    state.unlink()  # as if killed after the SR was stored, before the state was written
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    assert len(study_reports(orthanc, study_id)) == 1
    record = load_state(state).studies[study_id]
    assert record.sr_sop_instance_uid == str(report.SOPInstanceUID)
    assert record.abnormality == pytest.approx(content_value(report, "Probability"))


def test_worker_killed_in_the_middle_of_a_study_and_restarted_stores_one_sr(orthanc, tiny_repository, tmp_path):
    study_uid = generate_uid()
    study_id = upload_study(orthanc, [radiograph_bytes(study_uid, seed, size=(1024, 800)) for seed in range(12)])
    state = tmp_path / "state.json"
    command = [sys.executable, "-m", "pacs", "--orthanc", orthanc.url, "--models", str(tiny_repository),
               "--state", str(state), "--once"]
    environment = {**os.environ, "ORTHANC_USERNAME": USERNAME, "ORTHANC_PASSWORD": PASSWORD}
    worker = subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.PIPE, text=True)
    for line in worker.stderr:
        if "fetching and scoring 12 radiograph instances" in line:
            worker.send_signal(signal.SIGKILL)
            break
    worker.wait(timeout=120)
    worker.stderr.close()
    assert worker.returncode == -signal.SIGKILL
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    [report] = study_reports(orthanc, study_id)
    assert len(referenced_instances(report)) == 12
    assert load_state(state).studies[study_id].sr_sop_instance_uid == str(report.SOPInstanceUID)


def test_more_images_after_scoring_give_a_new_sr_superseding_the_first(orthanc, tiny_repository, tmp_path):
    study_uid = generate_uid()
    study_id = upload_study(orthanc, [radiograph_bytes(study_uid, 4)])
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    [first] = study_reports(orthanc, study_id)
    added = radiograph_bytes(study_uid, 5)
    upload_study(orthanc, [added])
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    earlier, newer = study_reports(orthanc, study_id)
    assert str(earlier.SOPInstanceUID) == str(first.SOPInstanceUID)
    predecessors = [str(instance.ReferencedSOPInstanceUID) for study in newer.PredecessorDocumentsSequence
                    for series in study.ReferencedSeriesSequence for instance in series.ReferencedSOPSequence]
    assert predecessors == [str(first.SOPInstanceUID)]
    assert referenced_instances(newer) == referenced_instances(first) | {
        str(pydicom.dcmread(io.BytesIO(added)).SOPInstanceUID)}
    assert load_state(state).studies[study_id].sr_sop_instance_uid == str(newer.SOPInstanceUID)


def test_ct_study_is_skipped_with_a_log_line(orthanc, tiny_repository, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    ct = radiograph_bytes(generate_uid(), 6, modality="CT", body_part=None,
                          extra={"SOPClassUID": CTImageStorage})
    study_id = upload_study(orthanc, [ct])
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    assert study_reports(orthanc, study_id) == []
    assert f"study {study_id}: skipped, no projection radiograph (modalities: CT)" in caplog.text
    assert load_state(state).studies[study_id].skipped == "no projection radiograph"


def test_unreadable_instance_is_named_and_the_study_scored_on_the_rest(orthanc, tiny_repository, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    study_uid = generate_uid()
    colour = np.stack([np.round(synthetic_radiograph("XR_WRIST", seed=8) * 255).astype(np.uint8)] * 3, axis=-1)
    colour_bytes = to_bytes(make_dataset(colour, photometric="RGB", study_uid=study_uid))
    good = radiograph_bytes(study_uid, 9)
    study_id = upload_study(orthanc, [good, colour_bytes])
    colour_id = next(instance["ID"] for instance in orthanc.get(f"/studies/{study_id}/instances")
                     if instance["MainDicomTags"]["SOPInstanceUID"] == pydicom.dcmread(io.BytesIO(colour_bytes))
                     .SOPInstanceUID)
    assert run_worker(orthanc, tiny_repository, tmp_path / "state.json") == EXIT_DONE
    [report] = study_reports(orthanc, study_id)
    assert referenced_instances(report) == {str(pydicom.dcmread(io.BytesIO(good)).SOPInstanceUID)}
    assert f"study {study_id}: instance left out, {colour_id}:" in caplog.text
    for marker in LEAK_MARKERS:
        assert marker not in caplog.text


def test_study_failing_unexpectedly_is_logged_and_recorded_and_the_feed_goes_on(
        orthanc, tiny_repository, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    study_id = upload_study(orthanc, [radiograph_bytes(generate_uid(), 10)])

    def failing_report(*arguments, **options):
        raise ValueError("Leakmore^Penelope^Q is not a valid value")  # a library message quoting a header

    monkeypatch.setattr("pacs.processor.build_structured_report", failing_report)
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    assert f"study {study_id}: skipped, it could not be processed (ValueError)" in caplog.text
    assert "Leakmore" not in caplog.text
    assert load_state(state).studies[study_id].skipped == "error: ValueError"
    assert study_reports(orthanc, study_id) == []


def test_stopped_orthanc_is_one_clear_line_and_exit_3(tiny_repository, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["--orthanc", url, "--models", str(tiny_repository), "--state", str(tmp_path / "s.json"),
                 "--once", "--retries", "1"])
    assert code == EXIT_UNREACHABLE
    assert capsys.readouterr().err.strip().splitlines() == [
        f"pacs: error: Orthanc at {url} is unreachable ([Errno 111] Connection refused); check that it runs and"
        " that --orthanc names its HTTP port"]


def test_wrong_password_is_one_clear_line_and_exit_4(orthanc, tiny_repository, tmp_path, capsys):
    code = main(["--orthanc", orthanc.url, "--models", str(tiny_repository), "--state", str(tmp_path / "s.json"),
                 "--once", "--username", USERNAME, "--password", "wrong"])
    assert code == EXIT_UNAUTHORIZED
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("pacs: error: Orthanc refused the credentials (HTTP 401)")


def test_worklist_lists_scored_studies_most_likely_abnormal_first(tmp_path, capsys):
    state = tmp_path / "state.json"
    save_state(state, WorkerState(7, {
        "low": StudyRecord(("1.2",), "1.9", "o1", "20240101", "XR_HAND", 0.1, "normal"),
        "ct": StudyRecord((), study_date="20240103", skipped="no projection radiograph"),
        "high": StudyRecord(("1.3",), "1.8", "o2", "20240102", "XR_WRIST", 0.9, "abnormal"),
    }))
    assert main(["worklist", "--state", str(state)]) == EXIT_DONE
    assert capsys.readouterr().out.splitlines() == [
        "orthanc_study\tstudy_date\tbody_part\tscore\tlabel",
        "high\t20240102\tXR_WRIST\t0.900000\tabnormal",
        "low\t20240101\tXR_HAND\t0.100000\tnormal",
    ]


def test_damaged_state_file_is_a_clear_exit_6(tmp_path, capsys):
    state = tmp_path / "state.json"
    state.write_text("{half a state")
    assert main(["worklist", "--state", str(state)]) == EXIT_STATE
    assert "is not a worker state; move it away" in capsys.readouterr().err
