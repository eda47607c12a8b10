"""The DICOM node (pacs/node) against real dcmtk (storescu, storescp, echoscu), dciodvfy and Orthanc."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bench.launch import ROOT, free_port
from pacs.node.completion import RetrySchedule, StableStudies
from pacs.node.scp import ScpSettings, start_scp
from pacs.node.sender import Destination
from pacs.node.service import Node, NodeSettings
from pacs.node.spool import Spool
from pacs.node.tls import client_ssl_context, server_ssl_context
from tests.support.dicom_factory import LEAK_MARKERS, encapsulate_frames, make_dataset, synthetic_radiograph, to_bytes
from tests.support.node_peers import (
    LOOPBACK,
    Storescp,
    dciodvfy_errors,
    echoscu,
    make_test_ca,
    running_storescp,
    storescu,
    wait_until,
)
from tests.support.orthanc_server import running_orthanc
from tests.support.sr_items import content_value, referenced_instances

NODE_AE = "TRIAGE"
LIMIT_S = 120.0  # bound of every poll on a real process


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class RunningNode:
    """An in-process node: its port, spool and Node."""

    port: int
    spool: Spool
    node: Node

    def idle(self) -> bool:
        """Nothing watched, nothing to send, no instance left in the spool."""
        return (self.node.stable.seconds_to_next() is None and self.node.retries.seconds_to_next() is None
                and not list(self.spool.root.glob("*/*.dcm")))


@contextmanager
def running_node(spool_folder: Path, pipeline, destination: Destination, *, allow: tuple[str, ...] = (),
                 server_tls=None, client_tls=None, stable_s: float = 0.5, retry_s: float = 0.2,
                 heatmaps: bool = False) -> Iterator[RunningNode]:
    """Start the node's SCP and loop in this process (real clock), and always stop both."""
    spool = Spool(spool_folder)
    settings = NodeSettings(NODE_AE, destination, stable_s=stable_s, retry_first_s=retry_s, retry_max_s=1.0,
                            ssl_context=client_tls, timeout_s=20, heatmaps=heatmaps)
    node = Node(pipeline, spool, settings)
    port = free_port()
    server = start_scp(ScpSettings(NODE_AE, allow, ssl_context=server_tls), LOOPBACK, port, node.receive)
    loop = threading.Thread(target=node.serve, daemon=True)
    loop.start()
    try:
        yield RunningNode(port, spool, node)
    finally:
        node.stop()
        loop.join(timeout=60)
        server.shutdown()


def write_study(folder: Path, name: str, datasets: list[pydicom.Dataset]) -> list[Path]:
    """Write a study's datasets as DICOM files in folder/name/."""
    (folder / name).mkdir(parents=True)
    paths = []
    for index, dataset in enumerate(datasets):
        path = folder / name / f"{index}.dcm"
        path.write_bytes(to_bytes(dataset))
        paths.append(path)
    return paths


def wrist_datasets(num_views: int, seed: int = 0, **options) -> list[pydicom.Dataset]:
    """`num_views` synthetic DX wrist views of one new study (8-bit, native)."""
    study_uid = generate_uid()
    return [make_dataset(np.round(synthetic_radiograph("XR_WRIST", seed=seed + view) * 255).astype(np.uint8),
                         study_uid=study_uid, **options) for view in range(num_views)]


def jpeg2000_datasets() -> list[pydicom.Dataset]:
    """Two views of one study compressed JPEG 2000 lossless (pydicom's encoder, openjpeg)."""
    datasets = wrist_datasets(2, seed=10)
    for dataset in datasets:
        dataset.compress(JPEG2000Lossless)
    return datasets


def jpeg_ls_datasets() -> list[pydicom.Dataset]:
    """Two views of one study compressed JPEG-LS lossless (imagecodecs' CharLS)."""
    datasets = wrist_datasets(2, seed=20)
    for dataset in datasets:
        encapsulate_frames(dataset, [bytes(imagecodecs.jpegls_encode(dataset.pixel_array))], JPEGLSLossless)
    return datasets


def rle_datasets() -> list[pydicom.Dataset]:
    """One view of one study compressed RLE lossless."""
    datasets = wrist_datasets(1, seed=30)
    datasets[0].compress(RLELossless)
    return datasets


@pytest.fixture(scope="module")
def predict_client(tiny_repository: Path):
    """/predict of the same repository with the service's default limits (a real CR is 1760x1760)."""
    from app import create_app

    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(tiny_repository)})
    yield flask_app.test_client()
    flask_app.extensions["pipeline_loader"].close()


def predicted_abnormality(client, paths: list[Path]) -> float:
    """The study abnormality /predict gives for these DICOM files."""
    files = [(path.open("rb"), path.name) for path in paths]
    response = client.post("/predict", data={"image": files}, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["study"]["abnormality"]






def sop_uids(paths: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in paths}


def reports_by_study(archive: Storescp) -> dict[str, list[pydicom.Dataset]]:
    grouped: dict[str, list[pydicom.Dataset]] = {}
    for report in archive.reports():
        grouped.setdefault(str(report.StudyInstanceUID), []).append(report)
    return grouped


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Storescp]:
    """storescp as the node's destination."""
    with running_storescp(tmp_path / "archive") as server:
        yield server


def destination_of(archive: Storescp) -> Destination:
    return Destination(archive.ae_title, LOOPBACK, archive.port)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--destination", "ARCHIVE-host-104"], "is not AE_TITLE@host:port"),
    (["--destination", "ARCHIVE@host:70000"], "is not AE_TITLE@host:port"),
    (["--ae-title", "A-TITLE-LONGER-THAN-16"], "is not an AE title"),
    (["--stable-seconds", "0"], "is not a positive number"),
    (["--tls-cert", "node.pem"], "--tls-cert and --tls-key go together"),
])
def test_bad_options_exit_2_naming_the_problem(arguments, message, tmp_path, capsys):
    from pacs.node.cli import main

    base = {"--port": "11112", "--ae-title": NODE_AE, "--destination": "ARCHIVE@127.0.0.1:104",
            "--spool": str(tmp_path / "spool")}
    base.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    with pytest.raises(SystemExit) as exit_info:
        main([item for pair in base.items() for item in pair])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_spool_exits_6(tmp_path, capsys):
    from pacs.node.cli import EXIT_SPOOL, main

    (tmp_path / "file").write_text("")
    code = main(["--port", "11112", "--ae-title", NODE_AE, "--destination", "ARCHIVE@127.0.0.1:104",
                 "--spool", str(tmp_path / "file" / "spool")])
    assert code == EXIT_SPOOL and "cannot use the spool" in capsys.readouterr().err


# --- the timing logic, driven by a fake clock ----------------------------------------------------------------

def test_study_is_complete_only_after_stable_seconds_of_silence():
    clock = FakeClock()
    studies = StableStudies(10.0, clock)
    studies.touch("a")
    clock.now += 6
    studies.touch("b")
    clock.now += 3.9
    assert studies.due() == []
    clock.now += 0.1
    assert studies.due() == ["a"]
    assert studies.due() == []  # handed out once
    clock.now += 6
    assert studies.due() == ["b"]


def test_retry_delay_doubles_up_to_its_maximum():
    clock = FakeClock()
    retries = RetrySchedule(1.0, 5.0, clock)
    retries.now("a")
    assert retries.due() == ["a"]
    assert [retries.failed("a")[0] for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.now += 4.9
    assert retries.due() == []
    clock.now += 0.1
    assert retries.due() == ["a"]
    retries.done("a")
    assert retries.due() == [] and retries.seconds_to_next() is None


def test_spool_is_private_and_names_files_by_keyed_hash(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    dataset = wrist_datasets(1)[0]
    path = spool.write_instance(str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID), to_bytes(dataset))
    assert (spool.root.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o700, 0o700)
    assert path.stat().st_mode & 0o777 == 0o600
    assert str(dataset.SOPInstanceUID) not in str(path) and str(dataset.StudyInstanceUID) not in str(path)
    reopened, other = Spool(tmp_path / "spool"), Spool(tmp_path / "other")
    assert reopened.spool_id("1.2.3") == spool.spool_id("1.2.3") != other.spool_id("1.2.3")


def test_node_stages_the_sr_before_sending_and_keeps_it_while_the_destination_is_down(tmp_path, tiny_pipeline):
    clock = FakeClock()
    settings = NodeSettings(NODE_AE, Destination("ARCHIVE", LOOPBACK, free_port()), stable_s=10, timeout_s=5)
    node = Node(tiny_pipeline, Spool(tmp_path / "spool"), settings, clock)
    datasets = wrist_datasets(2)
    for dataset in datasets:
        node.receive(str(dataset.SOPClassUID), str(dataset.SOPInstanceUID), str(dataset.StudyInstanceUID),
                     to_bytes(dataset))
    study_id = node.spool.spool_id(str(datasets[0].StudyInstanceUID))
    clock.now += 9.9
    node.step()
    assert node.spool.pending_files(study_id) == []
    clock.now += 0.1
    node.step()  # scored, staged, the send fails: nothing listens on the destination's port
    (staged,) = node.spool.pending_files(study_id)
    assert referenced_instances(pydicom.dcmread(staged)) == {str(dataset.SOPInstanceUID) for dataset in datasets}
    assert len(list((tmp_path / "spool" / study_id).glob("*.dcm"))) == 2  # kept until sent
    assert node.retries.seconds_to_next() == pytest.approx(settings.retry_first_s)
    restarted = Node(tiny_pipeline, Spool(tmp_path / "spool"), settings, clock)
    restarted.recover()
    assert restarted.spool.pending_files(study_id) == [staged]  # the same SR, not a second one
    assert restarted.retries.due() == [study_id]


def test_a_damaged_spool_file_is_logged_and_the_other_studies_go_on(tmp_path, tiny_pipeline, caplog):
    clock = FakeClock()
    settings = NodeSettings(NODE_AE, Destination("ARCHIVE", LOOPBACK, free_port()), stable_s=1, timeout_s=5)
    node = Node(tiny_pipeline, Spool(tmp_path / "spool"), settings, clock)
    node.receive(str(DigitalXRayImageStorageForPresentation), "1.2.3.4", "1.2.3", b"not a DICOM file")
    (dataset,) = wrist_datasets(1)
    node.receive(str(dataset.SOPClassUID), str(dataset.SOPInstanceUID), str(dataset.StudyInstanceUID),
                 to_bytes(dataset))
    clock.now += 1
    node.step()
    assert f"study {node.spool.spool_id('1.2.3')}: failed (InvalidDicomError)" in caplog.text
    assert len(node.spool.pending_files(node.spool.spool_id(str(dataset.StudyInstanceUID)))) == 1


# --- against dcmtk ----------------------------------------------------------------------------------------

def test_echoscu_gets_an_answer(tmp_path, tiny_pipeline, archive):
    with running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive)) as node:
        completed = echoscu(node.port)
    assert completed.returncode == 0, completed.stderr


def test_each_study_gets_one_valid_sr_with_predicts_score_and_every_instance(tmp_path, tiny_pipeline, archive,
                                                                      predict_client, caplog):
    studies = {  # name: (files, storescu's option proposing their transfer syntax)
        "dx": (write_study(tmp_path / "in", "dx", wrist_datasets(3)), "-x="),
        "jpeg2000": (write_study(tmp_path / "in", "jpeg2000", jpeg2000_datasets()), "-xv"),
        "jpeg-ls": (write_study(tmp_path / "in", "jpeg-ls", jpeg_ls_datasets()), "-xt"),
        "rle": (write_study(tmp_path / "in", "rle", rle_datasets()), "-xr"),
        "cr": ([Path(get_testdata_file("RG3_J2KR.dcm"))], "-xv"),
    }
    caplog.set_level(logging.INFO)
    with running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive)) as node:
        for paths, syntax in studies.values():
            completed = storescu(node.port, paths, syntax=syntax)
            assert completed.returncode == 0, completed.stderr
        wait_until(lambda: len(archive.complete_reports()) >= len(studies) and node.idle(), LIMIT_S, "one SR per study")
        for paths, syntax in studies.values():  # the same images again: no second SR
            assert storescu(node.port, paths, syntax=syntax).returncode == 0
        wait_until(lambda: "received again" in caplog.text and node.idle(), LIMIT_S, "the repeats handled")
    reports = reports_by_study(archive)
    assert len(archive.reports()) == len(studies)
    assert {path.name: dciodvfy_errors(path) for path in archive.report_files()} == {
        path.name: [] for path in archive.report_files()}
    for name, (paths, _) in studies.items():
        study_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
        (report,) = reports[study_uid]
        assert referenced_instances(report) == sop_uids(paths), name
        expected = predicted_abnormality(predict_client, paths)
        assert content_value(report, "Probability") == pytest.approx(expected, abs=2e-6), name
    node_log = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("pacs.node"))
    assert "scored 3 view(s)" in node_log
    assert not any(marker in node_log for marker in LEAK_MARKERS)
    assert not any(uid in node_log for paths, _ in studies.values() for uid in sop_uids(paths))


def test_with_heatmaps_each_view_gets_a_secondary_capture_beside_the_sr(tmp_path, tiny_pipeline, archive):
    paths = write_study(tmp_path / "in", "dx", wrist_datasets(2))
    with running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive), heatmaps=True) as node:
        assert storescu(node.port, paths).returncode == 0
        wait_until(lambda: len(archive.report_files()) == 1 and node.idle(), LIMIT_S, "the SR and captures")
    captures = [pydicom.dcmread(path) for path in sorted(archive.folder.iterdir()) if path.name.startswith("SC")]
    assert len(captures) == 2
    sources = {str(capture.SourceImageSequence[0].ReferencedSOPInstanceUID) for capture in captures}
    assert sources == sop_uids(paths)


def test_more_images_after_the_sr_give_a_new_sr_that_supersedes_it(tmp_path, tiny_pipeline, archive):
    datasets = wrist_datasets(3)
    first = write_study(tmp_path / "in", "first", datasets[:2])
    later = write_study(tmp_path / "in", "later", datasets[2:])
    with running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive)) as node:
        assert storescu(node.port, first).returncode == 0
        wait_until(lambda: len(archive.complete_reports()) == 1 and node.idle(), LIMIT_S, "the first SR")
        assert storescu(node.port, first + later).returncode == 0
        wait_until(lambda: len(archive.complete_reports()) == 2 and node.idle(), LIMIT_S, "the second SR")
    earlier, newer = sorted(archive.reports(), key=lambda report: int(report.InstanceNumber))
    assert referenced_instances(newer) == sop_uids(first + later)
    predecessor = newer.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == earlier.SOPInstanceUID


def test_a_ct_is_received_and_not_scored(tmp_path, tiny_pipeline, archive, caplog):
    caplog.set_level(logging.INFO)
    ct = make_dataset(np.zeros((64, 64), np.uint8), modality="CT", extra={"SOPClassUID": CTImageStorage})
    paths = write_study(tmp_path / "in", "ct", [ct])
    with running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive)) as node:
        completed = storescu(node.port, paths)
        assert completed.returncode == 0, completed.stderr
        assert "CT Image Storage instance accepted, not scored" in caplog.text
        assert not list(node.spool.root.glob("*/*.dcm"))
    assert archive.reports() == []


def test_an_unknown_abstract_syntax_is_rejected_in_negotiation(tmp_path, tiny_pipeline, archive):
    requestor = AE(ae_title="MODALITY")  # dcmtk's storescu refuses to propose a class it does not know
    requestor.add_requested_context("1.2.826.0.1.3680043.9.7133.1.1")
    requestor.add_requested_context(Verification)
    with running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive)) as node:
        association = requestor.associate(LOOPBACK, node.port, ae_title=NODE_AE)
        try:
            accepted = [context.abstract_syntax for context in association.accepted_contexts]
            rejected = [context.abstract_syntax for context in association.rejected_contexts]
        finally:
            association.release()
    assert (accepted, rejected) == ([Verification], ["1.2.826.0.1.3680043.9.7133.1.1"])


def test_a_calling_ae_outside_allow_is_refused(tmp_path, tiny_pipeline, archive, caplog):
    caplog.set_level(logging.INFO)
    paths = write_study(tmp_path / "in", "dx", wrist_datasets(1))
    with running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive), allow=("MODALITY",)) as node:
        refused = storescu(node.port, paths, calling="INTRUDER")
        allowed = echoscu(node.port, calling="MODALITY")
    assert refused.returncode != 0 and "Rejected" in refused.stderr + refused.stdout
    assert allowed.returncode == 0
    assert "association from INTRUDER at 127.0.0.1" in caplog.text
    assert not list((tmp_path / "spool").glob("*/*.dcm"))


def test_destination_down_then_up_gets_the_sr_once(tmp_path, tiny_pipeline, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()
    paths = write_study(tmp_path / "in", "dx", wrist_datasets(2))
    with running_node(tmp_path / "spool", tiny_pipeline, Destination("ARCHIVE", LOOPBACK, port)) as node:
        assert storescu(node.port, paths).returncode == 0
        wait_until(lambda: caplog.text.count("SR not sent") >= 2, LIMIT_S, "two failed tries")
        with running_storescp(tmp_path / "archive", port=port) as archive:
            wait_until(lambda: len(archive.report_files()) == 1 and node.idle(), LIMIT_S, "the SR")
            assert len(archive.reports()) == 1
            assert referenced_instances(archive.reports()[0]) == sop_uids(paths)
    assert "SR sent to ARCHIVE@127.0.0.1" in caplog.text


def test_dicom_over_tls_with_a_test_ca(tmp_path, tiny_pipeline):
    certificates = make_test_ca(tmp_path / "ca")
    peer_tls = ["+tls", str(certificates["peer-key"]), str(certificates["peer"]), "+cf", str(certificates["ca"])]
    paths = write_study(tmp_path / "in", "dx", wrist_datasets(1))
    server_tls = server_ssl_context(certificates["node"], certificates["node-key"], certificates["ca"])
    client_tls = client_ssl_context(certificates["node"], certificates["node-key"], certificates["ca"])
    with running_storescp(tmp_path / "archive", tls=peer_tls) as archive, \
            running_node(tmp_path / "spool", tiny_pipeline, destination_of(archive), server_tls=server_tls,
                         client_tls=client_tls) as node:
        assert echoscu(node.port).returncode != 0  # plain TCP is not DICOM over TLS
        stranger = make_test_ca(tmp_path / "other-ca")
        stranger_tls = ["+tls", str(stranger["peer-key"]), str(stranger["peer"]), "+cf", str(certificates["ca"])]
        assert echoscu(node.port, tls=stranger_tls).returncode != 0  # a certificate the test CA did not sign
        assert echoscu(node.port, tls=peer_tls).returncode == 0
        completed = storescu(node.port, paths, tls=peer_tls)
        assert completed.returncode == 0, completed.stderr
        wait_until(lambda: len(archive.report_files()) == 1 and node.idle(), LIMIT_S, "the SR over TLS")
    assert referenced_instances(archive.reports()[0]) == sop_uids(paths)


# --- a subprocess killed with -9 ----------------------------------------------------------------------------

def start_node_process(models: Path, spool: Path, port: int, archive: Storescp, stable_s: float,
                       log_path: Path) -> subprocess.Popen:
    """python -m pacs.node as its own process, on the repository `models`."""
    command = [sys.executable, "-m", "pacs.node", "--host", LOOPBACK, "--port", str(port), "--ae-title", NODE_AE,
               "--destination", f"{archive.ae_title}@{LOOPBACK}:{archive.port}", "--spool", str(spool),
               "--models", str(models), "--stable-seconds", str(stable_s), "--retry-seconds", "0.2"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wait_until(lambda: echoscu(port).returncode == 0 or process.poll() is not None, LIMIT_S, "the node answering")
    assert process.poll() is None, log_path.read_text()[-3000:]
    return process


def test_killed_before_sending_and_restarted_sends_exactly_one_sr(tmp_path, onnx_repository, archive):
    # The ONNX repository: each of the two node processes starts without importing TensorFlow.
    spool, port, log_path = tmp_path / "spool", free_port(), tmp_path / "node.log"
    paths = write_study(tmp_path / "in", "dx", wrist_datasets(3))
    process = start_node_process(onnx_repository, spool, port, archive, 3600, log_path)
    try:
        assert storescu(port, paths).returncode == 0
        assert len(list(spool.glob("*/*.dcm"))) == 3  # on disk before the C-STORE was answered
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert archive.reports() == []
    process = start_node_process(onnx_repository, spool, port, archive, 0.5, log_path)
    try:
        wait_until(lambda: len(archive.report_files()) == 1 and not list(spool.glob("*/*.dcm"))
                   and not list(spool.glob("*/outbox/*")), LIMIT_S, "the SR after restart")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert len(archive.reports()) == 1
    assert referenced_instances(archive.reports()[0]) == sop_uids(paths)
    (state_file,) = spool.glob("*/state.json")
    assert len(json.loads(state_file.read_text())["reports"]) == 1
    node_log = log_path.read_text()
    assert "SR sent to ARCHIVE" in node_log
    assert not any(marker in node_log for marker in LEAK_MARKERS)
    assert not any(uid in node_log for uid in sop_uids(paths))


# --- Orthanc as a peer --------------------------------------------------------------------------------------

def test_orthanc_sends_a_study_to_the_node_and_receives_its_sr(tmp_path, tiny_pipeline):
    datasets = wrist_datasets(2)
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        orthanc_port = int(orthanc.get("/system")["DicomPort"])
        destination = Destination(orthanc.get("/system")["DicomAet"], LOOPBACK, orthanc_port)
        with running_node(tmp_path / "spool", tiny_pipeline, destination, allow=("TRIAGETEST",)) as node:
            modality = {"AET": NODE_AE, "Host": LOOPBACK, "Port": node.port}
            orthanc.request("PUT", "/modalities/triage", json.dumps(modality).encode())
            study_id = {orthanc.upload(to_bytes(dataset))["ParentStudy"] for dataset in datasets}.pop()
            orthanc.request("POST", "/modalities/triage/store", json.dumps({"Resources": [study_id]}).encode())
            wait_until(lambda: len(orthanc_reports(orthanc, study_id)) == 1 and node.idle(), LIMIT_S, "the SR")
        (report,) = orthanc_reports(orthanc, study_id)
    assert report.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert referenced_instances(report) == {str(dataset.SOPInstanceUID) for dataset in datasets}


def orthanc_reports(orthanc, study_id: str) -> list[pydicom.Dataset]:
    """The SRs Orthanc holds in the study."""
    return [pydicom.dcmread(io.BytesIO(orthanc.request("GET", f"/instances/{instance}/file")))
            for series in orthanc.get(f"/studies/{study_id}/series")
            if series["MainDicomTags"].get("Modality") == "SR" for instance in series["Instances"]]
