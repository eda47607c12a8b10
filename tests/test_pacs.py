"""The Orthanc worker (pacs/) against a real Orthanc started by the test (tests/support/orthanc_server.py)."""

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
from classifiers.decoding import decode_views
from classifiers.outputs.structured_report import structured_report_bytes
from classifiers.results import ViewInput
from pacs.archive import OrthancArchive
from pacs.cli import EXIT_DONE, EXIT_STATE, EXIT_UNAUTHORIZED, EXIT_UNREACHABLE, main
from pacs.client import OrthancClient, OrthancUnreachable
from pacs.follower import MAX_STUDY_TRIES, handle_study
from pacs.state import StateError, StudyRecord, WorkerState, load_state, lock_path, locked_state, save_state
from tests.support.dicom_factory import LEAK_MARKERS, make_dataset, synthetic_radiograph, to_bytes
from tests.support.legacy_report import build_legacy_report
from tests.support.orthanc_server import PASSWORD, USERNAME, Orthanc, running_orthanc
from tests.support.sr_items import content_value, referenced_instances
from tests.support.triage_repository import triaged_copy


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


def test_the_triage_category_reaches_the_sr_the_state_and_the_worklist_and_is_adopted_back(
        orthanc, tiny_repository, tmp_path, capsys):
    # rule-out 0 and rule-in 0: every scored study is flagged.
    models = triaged_copy(tiny_repository, tmp_path / "triaged", rule_out=0.0, rule_in=0.0)
    study_id = upload_study(orthanc, [radiograph_bytes(generate_uid(), 4)])
    state = tmp_path / "state.json"
    assert run_worker(orthanc, models, state) == EXIT_DONE
    [report] = study_reports(orthanc, study_id)
    assert content_value(report, "Triage category").startswith("Flagged")
    assert content_value(report, "Rule-in threshold") == 0.0
    assert load_state(state).studies[study_id].triage == "flagged"
    state.unlink()  # the SR is adopted: its category is read back from it
    assert run_worker(orthanc, models, state) == EXIT_DONE
    assert len(study_reports(orthanc, study_id)) == 1 and load_state(state).studies[study_id].triage == "flagged"
    assert main(["worklist", "--state", str(state)]) == EXIT_DONE
    header, line = capsys.readouterr().out.splitlines()
    assert header.split("\t")[-1] == "triage" and line.startswith(study_id) and line.split("\t")[-1] == "flagged"


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


def legacy_report_bytes(pipeline, files: list[bytes]) -> bytes:
    """The SR the earlier release wrote for these files (tests/support/legacy_report.py), scored by the same models."""
    inputs = [ViewInput(f"{index}.dcm", data) for index, data in enumerate(files)]
    views = decode_views(inputs, pipeline.settings.image_limits)  # the headers the earlier release copied
    result = pipeline.predict_study(inputs)
    return structured_report_bytes(build_legacy_report([view.header for view in views], result))


def test_an_sr_of_the_earlier_release_is_recognised_and_superseded_never_doubled(
        orthanc, tiny_repository, tiny_pipeline, tmp_path):
    study_uid = generate_uid()
    first = radiograph_bytes(study_uid, 11)
    study_id = upload_study(orthanc, [first])
    upload_study(orthanc, [legacy_report_bytes(tiny_pipeline, [first])])
    [legacy] = study_reports(orthanc, study_id)
    assert legacy.ConceptNameCodeSequence[0].CodeValue == "18748-4"  # the earlier, flat format
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE  # an upgraded worker, a fresh state
    assert len(study_reports(orthanc, study_id)) == 1  # adopted, not written again
    record = load_state(state).studies[study_id]
    assert record.sr_sop_instance_uid == str(legacy.SOPInstanceUID)
    assert record.abnormality == pytest.approx(content_value(legacy, "Probability"))
    # A new image: the new SR (TID 1500) supersedes the earlier one; one of each is now in the study.
    upload_study(orthanc, [radiograph_bytes(study_uid, 12)])
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    earlier, newer = study_reports(orthanc, study_id)
    assert str(earlier.SOPInstanceUID) == str(legacy.SOPInstanceUID)
    assert newer.ConceptNameCodeSequence[0].CodeValue == "126000"
    predecessor = newer.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == legacy.SOPInstanceUID
    state.unlink()  # as if the state were lost: both SRs are read, the one of the current images is adopted
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    assert len(study_reports(orthanc, study_id)) == 2
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


LYING_CASES = ("jpeg-baseline-huge", "jpeg-ls-huge", "jpeg2000-larger", "rle-segments")


def test_lying_codestreams_are_each_that_views_error_and_the_study_scored_on_the_rest(
        orthanc, tiny_repository, tmp_path, caplog, decode_calls):
    """Frames whose own header claims another size (60000x60000, one row more) are refused before any codec runs."""
    from fuzz.crafted import lying_datasets

    caplog.set_level(logging.INFO)
    study_uid = generate_uid()
    pixels = np.round(synthetic_radiograph("XR_WRIST", seed=12) * 255).astype(np.uint8)
    lying = {case: dataset for case, dataset in lying_datasets(pixels).items() if case in LYING_CASES}
    good = radiograph_bytes(study_uid, 13)
    patient_id = pydicom.dcmread(io.BytesIO(good)).PatientID  # Orthanc's study id is patient + study UID
    for dataset in lying.values():
        dataset.StudyInstanceUID, dataset.PatientID = study_uid, patient_id
    study_id = upload_study(orthanc, [good, *(to_bytes(dataset) for dataset in lying.values())])
    ids = {instance["MainDicomTags"]["SOPInstanceUID"]: instance["ID"]
           for instance in orthanc.get(f"/studies/{study_id}/instances")}
    state = tmp_path / "state.json"
    assert run_worker(orthanc, tiny_repository, state) == EXIT_DONE
    [report] = study_reports(orthanc, study_id)
    assert referenced_instances(report) == {str(pydicom.dcmread(io.BytesIO(good)).SOPInstanceUID)}
    for dataset in lying.values():
        assert f"study {study_id}: instance left out, {ids[str(dataset.SOPInstanceUID)]}: the " in caplog.text
    assert decode_calls == []  # the good view is native: no codec ran at all
    record = load_state(state).studies[study_id]
    assert record.skipped is None and record.sr_sop_instance_uid == str(report.SOPInstanceUID)
    assert len(record.instances) == 1 + len(LYING_CASES)


def test_study_failing_unexpectedly_is_logged_and_recorded_and_the_feed_goes_on(
        orthanc, tiny_repository, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    study_id = upload_study(orthanc, [radiograph_bytes(generate_uid(), 10)])

    def failing_report(*arguments, **options):
        raise ValueError("Leakmore^Penelope^Q is not a valid value")  # a library message quoting a header

    monkeypatch.setattr("pacs.processor.build_dicom_outputs", failing_report)
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


def test_worklist_lists_unscored_radiograph_studies_first_then_most_likely_abnormal(tmp_path, capsys):
    state = tmp_path / "state.json"
    save_state(state, WorkerState(7, {
        "low": StudyRecord(("1.2",), "1.9", "o1", "20240101", "XR_HAND", 0.1, "normal"),
        "ct": StudyRecord((), study_date="20240103", skipped="no projection radiograph"),
        "unread": StudyRecord(("1.4",), study_date="20240104", skipped="no readable radiograph"),
        "high": StudyRecord(("1.3",), "1.8", "o2", "20240102", "XR_WRIST", 0.9, "abnormal"),
        "big": StudyRecord(("1.5",), study_date="20240105", skipped="StudyTooLarge"),
    }))
    assert main(["worklist", "--state", str(state)]) == EXIT_DONE
    assert capsys.readouterr().out.splitlines() == [
        "orthanc_study\tstudy_date\tbody_part\tscore\tlabel\ttriage",
        "big\t20240105\t\t\tunscored: read first (StudyTooLarge)\t",
        "unread\t20240104\t\t\tunscored: read first (no readable radiograph)\t",
        "high\t20240102\tXR_WRIST\t0.900000\tabnormal\t",
        "low\t20240101\tXR_HAND\t0.100000\tnormal\t",
    ]


def test_worklist_lists_flagged_then_indeterminate_then_low_whatever_the_scores(tmp_path, capsys):
    state = tmp_path / "state.json"
    save_state(state, WorkerState(7, {
        "low": StudyRecord(("1.2",), "1.9", "o1", "20240101", "XR_HAND", 0.45, "normal", triage="low"),
        "indeterminate": StudyRecord(("1.3",), "1.8", "o2", "20240102", "XR_HAND", 0.9, "abnormal",
                                     triage="indeterminate"),
        "flagged": StudyRecord(("1.4",), "1.7", "o3", "20240103", "XR_WRIST", 0.6, "abnormal", triage="flagged"),
    }))
    assert main(["worklist", "--state", str(state)]) == EXIT_DONE
    assert capsys.readouterr().out.splitlines()[1:] == [
        "flagged\t20240103\tXR_WRIST\t0.600000\tabnormal\tflagged",
        "indeterminate\t20240102\tXR_HAND\t0.900000\tabnormal\tindeterminate",
        "low\t20240101\tXR_HAND\t0.450000\tnormal\tlow",
    ]


def test_damaged_state_file_is_a_clear_exit_6(tmp_path, capsys):
    state = tmp_path / "state.json"
    state.write_text("{half a state")
    assert main(["worklist", "--state", str(state)]) == EXIT_STATE
    assert "is not a worker state; move it away" in capsys.readouterr().err


@pytest.mark.parametrize(("modality", "logged"),
                         [("CT", "CT"), ("MR", "MR"), ("PID-7731-SECRET", "other"), ("", "other")])
def test_skipped_study_log_names_only_defined_modalities(modality: str, logged: str) -> None:
    from pacs.processor import _loggable

    assert _loggable(modality) == logged


@pytest.mark.parametrize("content", [
    '{"last_change": 3, "studies": []}',
    '{"last_change": 1e400, "studies": {}}',
    '{"last_change": "3", "studies": {}}',
    '{"last_change": true, "studies": {}}',
    '{"last_change": -1, "studies": {}}',
    '{"last_change": 3.5, "studies": {}}',
    '{"last_change": ' + "9" * 5000 + ', "studies": {}}',
    '{"studies": {}}',
    '[1, 2]',
    '"a string"',
    '{"last_change": 3, "studies": {"s": []}}',
    '{"last_change": 3, "studies": {"s": {"instances": "1.2.3"}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [1, 2]}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "abnormality": "0.5"}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "abnormality": 1e400}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "abnormality": 2}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "label": ["x"]}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "moved_aside": 1}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "unknown_key": 1}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "triage": "urgent"}}}',
    '{"last_change": 3, "studies": {"s": {"instances": [], "triage": 0}}}',
    '{"last_change": 3, "studies": {"s": {"body_part": "XR_HAND"}}}',
    '{"last_change": 3, "studies": {}, "failing": {"s": "2"}}',
    '{"last_change": 3, "studies": {}, "failing": []}',
    "[" * 100_000,
    "\xff\xfe not text",
])
def test_any_state_file_the_worker_cannot_use_is_one_line_and_exit_6(content, tmp_path, capsys):
    state = tmp_path / "state.json"
    state.write_bytes(content.encode("latin-1"))
    assert main(["worklist", "--state", str(state)]) == EXIT_STATE
    assert main(["--orthanc", f"http://127.0.0.1:{free_port()}", "--state", str(state), "--once"]) == EXIT_STATE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("pacs: error: the state file ") and "move it away" in line
                                   for line in lines), lines


def test_state_written_before_failing_studies_were_recorded_still_loads(tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"format_version": 1, "last_change": 4, "studies": {"s": {"instances": ["1.2"],'
                     ' "abnormality": 0.25, "label": "normal", "sr_sop_instance_uid": null}}}')
    loaded = load_state(state)
    assert loaded.last_change == 4 and loaded.failing == {}
    assert loaded.studies["s"] == StudyRecord(("1.2",), abnormality=0.25, label="normal")
    assert loaded.studies["s"].triage is None  # written before triage categories


@pytest.mark.parametrize("triage", ["flagged", "indeterminate", "low", None])
def test_a_study_records_triage_category_survives_a_save_and_load(triage, tmp_path):
    state = tmp_path / "state.json"
    record = StudyRecord(("1.2",), abnormality=0.7, label="abnormal", triage=triage)
    save_state(state, WorkerState(5, {"s": record}))
    assert load_state(state).studies["s"] == record


def test_a_second_worker_on_the_same_state_exits_6_naming_the_lock(tmp_path, capsys):
    state = tmp_path / "state.json"
    with locked_state(state):  # the first worker (flock: another open file, even in this process, is refused)
        code = main(["--orthanc", f"http://127.0.0.1:{free_port()}", "--state", str(state), "--once"])
    assert code == EXIT_STATE
    assert capsys.readouterr().err.strip().splitlines() == [
        f"pacs: error: another worker holds the lock {lock_path(state)} (pid {os.getpid()}) on the state file"
        f" {state}; run one worker per state file"]
    with locked_state(state):  # released when the first worker ends
        pass


def test_a_worker_in_another_process_holds_the_lock_until_it_exits(tmp_path):
    state = tmp_path / "state.json"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from pacs.state import locked_state\n"
                               "with locked_state(Path(sys.argv[1])):\n print('locked', flush=True)\n time.sleep(60)",
                               str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateError, match=f"pid {holder.pid}"), locked_state(state):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()
    with locked_state(state):
        pass


@pytest.fixture
def uncached_orthanc(tmp_path: Path):
    """An Orthanc that reads every file from its storage (no cache), so a damaged file is a real 500."""
    with running_orthanc(tmp_path / "orthanc", extra={"MaximumStorageCacheSize": 0}) as server:
        yield server


def break_instance_file(orthanc: Orthanc, storage: Path, instance_id: str) -> None:
    """Replace the instance's file in Orthanc's storage by a folder: Orthanc then answers 500 for it."""
    uuid = orthanc.get(f"/instances/{instance_id}/attachments/dicom/info")["Uuid"]
    path = storage / uuid[:2] / uuid[2:4] / uuid
    path.unlink()
    path.mkdir()


def test_a_study_orthanc_keeps_failing_on_is_moved_aside_and_the_feed_goes_on(
        uncached_orthanc, tiny_repository, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO)
    broken = upload_study(uncached_orthanc, [radiograph_bytes(generate_uid(), 11)])
    [instance] = uncached_orthanc.get(f"/studies/{broken}/instances")
    break_instance_file(uncached_orthanc, tmp_path / "orthanc" / "storage", instance["ID"])
    healthy = upload_study(uncached_orthanc, [radiograph_bytes(generate_uid(), 12)])
    state = tmp_path / "state.json"

    assert run_worker(uncached_orthanc, tiny_repository, state, "--retries", "0") == EXIT_DONE
    assert len(study_reports(uncached_orthanc, healthy)) == 1  # the study after the failing one is scored
    assert load_state(state).failing == {broken: 1} and broken not in load_state(state).studies
    assert f"study {broken}: try 1 of {MAX_STUDY_TRIES} failed (GET /instances/{instance['ID']}/file: Orthanc" \
           " answered HTTP 500 (server error))" in caplog.text
    for _ in range(MAX_STUDY_TRIES - 1):  # each pass tries the failing study once more
        assert run_worker(uncached_orthanc, tiny_repository, state, "--retries", "0") == EXIT_DONE
    record = load_state(state).studies[broken]
    assert record.moved_aside and record.abnormality is None and load_state(state).failing == {}
    assert record.instances == (str(instance["MainDicomTags"]["SOPInstanceUID"]),)
    assert f"study {broken}: moved aside after {MAX_STUDY_TRIES} tries, not scored" in caplog.text
    assert run_worker(uncached_orthanc, tiny_repository, state, "--retries", "0") == EXIT_DONE
    assert broken not in load_state(state).failing  # moved aside for good: not tried again
    capsys.readouterr()
    assert main(["worklist", "--state", str(state)]) == EXIT_DONE
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].startswith(f"{broken}\t20240102\t\t\tunscored: read first (moved aside")
    assert rows[2].startswith(f"{healthy}\t")
    for marker in LEAK_MARKERS:
        assert marker not in caplog.text


def test_an_orthanc_down_is_not_blamed_on_the_study(tmp_path):
    client = OrthancClient(f"http://127.0.0.1:{free_port()}", retry_delays_s=())
    state = WorkerState(5, failing={"other": 1})
    with pytest.raises(OrthancUnreachable):  # the pass stops (and is retried after a back-off), nothing counted
        handle_study(OrthancArchive(client), None, state, "a-study")
    assert state.failing == {"other": 1} and state.studies == {}


def test_with_heatmaps_the_worker_stores_a_capture_and_a_presentation_state_per_view(orthanc, tiny_repository,
                                                                                      tmp_path):
    study_uid = generate_uid()
    study_id = upload_study(orthanc, [radiograph_bytes(study_uid, 21), radiograph_bytes(study_uid, 22)])
    assert run_worker(orthanc, tiny_repository, tmp_path / "state.json", "--heatmaps") == EXIT_DONE
    modalities = [orthanc.get(f"/series/{instance['ParentSeries']}")["MainDicomTags"].get("Modality")
                  for instance in orthanc.get(f"/studies/{study_id}/instances")]
    assert sorted(modalities) == ["DX", "DX", "OT", "OT", "PR", "PR", "SR"]
    [report] = study_reports(orthanc, study_id)
    assert len(referenced_instances(report)) == 2
