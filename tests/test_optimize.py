"""training.optimize: fp32 ONNX + guarded INT8 per entry, recorded with sha256; auto serves the fastest verified."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from classifiers import Pipeline, PipelineSettings, ViewInput
from classifiers.backends.onnx_backend import OnnxModel
from classifiers.backends.openvino_backend import OpenVinoModel
from classifiers.body_parts import BODY_PARTS
from classifiers.preprocessing import PREPROCESSING_MODES, preprocess_batch
from classifiers.repository.entries import (
    INT8_FILE_KEY,
    INT8_GUARD_KEY,
    INT8_WEIGHTS_FILE_KEY,
    LEGACY_ONNX_INT8_FILE_KEY,
    ONNX_FILE_KEY,
    sha256_file,
)
from classifiers.repository.manifest import NO_MANIFEST_WARNING, read_manifest
from mura.metrics import roc_auc
from tests.conftest import encode_image
from tests.support.model_factory import build_tiny_expert, build_tiny_router, save_model, write_tiny_repository
from training.optimize import main, optimize_repository
from training.quantize import guard_figures, load_validation_views
from training.synthetic import generate_dataset

ROLES = ("router", *BODY_PARTS)


def _quiet(line: str) -> None:
    """Log sink for the command's progress lines."""


@pytest.fixture(scope="module")
def validation_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 labelled synthetic studies (three per body part, both labels in each) in the MURA layout."""
    root = tmp_path_factory.mktemp("validation") / "SYNTH"
    generate_dataset(root, 21, 0, "valid")
    return root / "valid"


@pytest.fixture(scope="module")
def int8_repository(tiny_repository: Path, validation_folder: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny repository optimized with --int8, calibrated on the validation folder; and its records."""
    folder = Path(shutil.copytree(tiny_repository, tmp_path_factory.mktemp("int8") / "repository"))
    records = optimize_repository(folder, int8=True, calibration=validation_folder, log=_quiet)
    return folder, records


@pytest.fixture(scope="module")
def refused_run(tiny_repository: Path, validation_folder: Path,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The command calibrating on a single view: the router's INT8 model clips most activations and fails the
    guard. The repository it wrote, and what it printed."""
    folder = Path(shutil.copytree(tiny_repository, tmp_path_factory.mktemp("refused") / "repository"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exit_code = main([str(folder), "--int8", "--calibration", str(validation_folder), "--calibration-views", "1"])
    assert exit_code == 0, printed.getvalue()
    return folder, printed.getvalue()


@pytest.fixture(scope="module")
def refused_repository(refused_run: tuple[Path, str]) -> Path:
    """The repository of `refused_run` (read only)."""
    return refused_run[0]


def test_every_artefact_is_in_the_manifest_with_its_sha256(int8_repository: tuple[Path, dict]) -> None:
    folder, records = int8_repository
    manifest = read_manifest(folder)  # verifies every recorded sha256
    for role, entry in manifest.entries().items():
        assert entry.files[ONNX_FILE_KEY] == f"{role}.onnx"
        assert entry.extra[INT8_GUARD_KEY] == records[role]
        assert records[role]["status"] == "passed" and records[role]["calibration_views"] > 0
        assert (entry.files[INT8_FILE_KEY], entry.files[INT8_WEIGHTS_FILE_KEY]) == (f"{role}.int8.xml",
                                                                                    f"{role}.int8.bin")
        for int8_file in (f"{role}.int8.xml", f"{role}.int8.bin"):
            assert entry.sha256[int8_file] == sha256_file(folder / int8_file)


def test_guard_figures_match_an_independent_computation(int8_repository: tuple[Path, dict],
                                                         validation_folder: Path) -> None:
    folder, records = int8_repository
    views = load_validation_views(validation_folder)
    manifest = read_manifest(folder)
    router = manifest.router
    pixels = views.pixels(router.input_size)
    fp32 = OnnxModel("router", folder / "router.onnx", router.input_size, router.preprocessing)
    int8 = OpenVinoModel("router", folder / "router.int8.xml", router.input_size, router.preprocessing)
    agreement = np.mean(fp32.predict(pixels).argmax(1) == int8.predict(pixels).argmax(1))
    assert records["router"]["num_views"] == len(pixels)
    assert records["router"]["routing_agreement"] == pytest.approx(agreement)
    hand = manifest.experts["XR_HAND"]
    own = [index for index, part in enumerate(views.body_parts) if part == "XR_HAND"]
    model = OpenVinoModel("XR_HAND", folder / "XR_HAND.int8.xml", hand.input_size, hand.preprocessing)
    probabilities = model.predict(views.pixels(hand.input_size)[own])[:, hand.positive_column]
    studies = sorted({views.study_ids[index] for index in own})
    means = [np.mean([p for p, i in zip(probabilities, own, strict=True) if views.study_ids[i] == s]) for s in studies]
    labels = [int(s.endswith("positive")) for s in studies]
    assert records["XR_HAND"]["num_studies"] == len(studies) == 3
    assert records["XR_HAND"]["auroc_int8"] == pytest.approx(roc_auc(labels, means))


@pytest.mark.parametrize("mode", sorted(PREPROCESSING_MODES))
def test_int8_models_compile_each_preprocessing_in_and_give_the_numpy_paths_outputs(
        int8_repository: tuple[Path, dict], mode: str) -> None:
    import openvino

    folder, _ = int8_repository
    path = folder / "router.int8.xml"
    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model = OpenVinoModel("router", path, (32, 32), mode)
    plain = openvino.Core().compile_model(str(path), "CPU").create_infer_request()
    expected = np.asarray(plain.infer([preprocess_batch(images, mode)])[0])
    np.testing.assert_allclose(model.predict(images), expected, atol=1e-5)
    with pytest.raises(TypeError, match="uint8 batch"):
        model.forward(preprocess_batch(images, mode))


@pytest.mark.parametrize(("role", "fp32", "int8", "passed"), [
    ("router", np.eye(7)[[0] * 199 + [1]], np.eye(7)[[0] * 199 + [2]], True),  # 99.5 % agree: the limit
    ("router", np.eye(7)[[0] * 198 + [1, 1]], np.eye(7)[[0] * 198 + [2, 2]], False),  # 99.0 %
])
def test_routing_agreement_limit(role: str, fp32: np.ndarray, int8: np.ndarray, passed: bool) -> None:
    # The router's figures need no study information: no views.
    figures = guard_figures(role, 0, fp32, int8, None, np.arange(len(fp32)))
    assert figures["passed"] is passed
    assert figures["routing_agreement"] == pytest.approx(np.mean(fp32.argmax(1) == int8.argmax(1)))


def test_auroc_drop_over_the_limit_fails(validation_folder: Path) -> None:
    views = load_validation_views(validation_folder)
    own = np.array([index for index, part in enumerate(views.body_parts) if part == "XR_WRIST"])
    labels = np.array([views.labels[index] for index in own], dtype=float)
    fp32 = labels[:, None] * 0.8 + 0.1  # perfect ranking: AUROC 1
    int8 = fp32.copy()
    int8[labels == 1] = 0.05  # the abnormal studies now rank lowest: AUROC 0
    figures = guard_figures("XR_WRIST", 0, fp32, int8, views, own)
    assert (figures["auroc_fp32"], figures["auroc_int8"], figures["passed"]) == (1.0, 0.0, False)
    same = guard_figures("XR_WRIST", 0, fp32, fp32 + 0.01, views, own)
    assert same["passed"] and same["mean_abs_difference"] == pytest.approx(0.01)


def test_a_refused_entry_keeps_fp32_and_auto_serves_it(refused_repository: Path) -> None:
    manifest = read_manifest(refused_repository)
    router = manifest.router
    assert router.extra[INT8_GUARD_KEY]["status"] == "failed"
    assert router.extra[INT8_GUARD_KEY]["routing_agreement"] < 0.995
    assert INT8_FILE_KEY not in router.files and not list(refused_repository.glob("router.int8.*"))
    pipeline = Pipeline.load(refused_repository)  # default backend: auto
    try:
        backends = {role: loaded.runner.backend for role, loaded in pipeline.models.items()}
        assert backends["router"] == "onnx"
        for role in BODY_PARTS:
            passed = manifest.experts[role].extra[INT8_GUARD_KEY]["status"] == "passed"
            assert backends[role] == ("int8" if passed else "onnx")
    finally:
        pipeline.close()


def test_cli_says_which_entries_kept_fp32(refused_run: tuple[Path, str]) -> None:
    output = refused_run[1]
    assert "router       INT8 refused by the accuracy guard (routing_agreement 0." in output
    assert "the accuracy guard kept fp32 ONNX for: router" in output


def test_auto_serves_int8_close_to_fp32_and_says_so(int8_repository: tuple[Path, dict],
                                                   validation_folder: Path) -> None:
    folder, _ = int8_repository
    auto = Pipeline.load(folder)
    fp32 = Pipeline.load(folder, PipelineSettings(backend="onnx"))
    try:
        described = auto.describe()["models"]
        assert {described[role]["backend"] for role in ROLES} == {"int8"}
        assert described["router"]["version"].startswith("router.int8.xml@")
        assert described["router"]["library"] == "openvino"
        paths = sorted((validation_folder / "XR_HAND").glob("*/*/*.png"))
        study = [ViewInput(path.name, path.read_bytes()) for path in paths]
        got, want = auto.predict_study(study, body_part="XR_HAND"), fp32.predict_study(study, body_part="XR_HAND")
        assert got.abnormality == pytest.approx(want.abnormality, abs=0.05)
        assert got.abnormality != want.abnormality  # really a different (quantized) model
    finally:
        auto.close()
        fp32.close()


def test_no_accuracy_guard_keeps_int8_unchecked(tiny_repository: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_repository, tmp_path / "repository"))
    calibration = tmp_path / "images" / "study1"
    calibration.mkdir(parents=True)
    for index in range(3):
        pixels = np.random.default_rng(index).integers(0, 256, (40, 40), dtype=np.uint8)
        (calibration / f"view{index}.png").write_bytes(encode_image(pixels))
    records = optimize_repository(folder, int8=True, calibration=tmp_path / "images", accuracy_guard=False,
                                  log=_quiet)
    assert {record["status"] for record in records.values()} == {"unchecked"}
    assert all("routing_agreement" not in record for record in records.values())
    assert read_manifest(folder).experts["XR_WRIST"].files[INT8_FILE_KEY] == "XR_WRIST.int8.xml"
    pipeline = Pipeline.load(folder, PipelineSettings(warmup=False))
    try:
        assert pipeline.models["XR_WRIST"].runner.backend == "int8"  # auto runs an unchecked INT8 model too
    finally:
        pipeline.close()


def test_rerun_without_int8_removes_the_older_int8_models(int8_repository: tuple[Path, dict], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(int8_repository[0], tmp_path / "repository"))
    lines: list[str] = []
    assert optimize_repository(folder, log=lines.append) == {}
    entries = read_manifest(folder).entries()
    assert all(INT8_FILE_KEY not in entry.files and INT8_GUARD_KEY not in entry.extra for entry in entries.values())
    assert not list(folder.glob("*.int8.*"))
    assert any("removed its INT8 model" in line for line in lines)


def test_int8_without_calibration_images_exits_2_saying_what_to_pass(tiny_repository: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    folder = Path(shutil.copytree(tiny_repository, tmp_path / "repository"))
    assert main([str(folder), "--int8"]) == 2
    error = capsys.readouterr().err
    assert "validation/" in error and "--calibration FOLDER" in error and error.count("\n") == 1


def test_dropping_optimizer_state_shrinks_the_weights_and_keeps_the_outputs(tmp_path: Path) -> None:
    folder = write_tiny_repository(tmp_path / "repository")
    expert = build_tiny_expert(seed=4)
    expert.compile(optimizer="adam", loss="binary_crossentropy")
    expert.fit(np.zeros((2, 32, 32, 3)), np.zeros((2, 1)), verbose=0)  # builds Adam's variables
    expert.save_weights(str(folder / "XR_ELBOW.weights.h5"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["experts"]["XR_ELBOW"]["sha256"]["XR_ELBOW.weights.h5"] = sha256_file(folder / "XR_ELBOW.weights.h5")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    size = (folder / "XR_ELBOW.weights.h5").stat().st_size
    optimize_repository(folder, drop_optimizer=True, log=_quiet)
    with h5py.File(folder / "XR_ELBOW.weights.h5", "r") as handle:
        assert "optimizer" not in handle
    assert (folder / "XR_ELBOW.weights.h5").stat().st_size < size
    pipeline = Pipeline.load(folder, PipelineSettings(backend="tensorflow", warmup=False))
    try:
        probe = np.full((1, 32, 32, 3), 0.25, np.float32)
        np.testing.assert_allclose(pipeline.models["XR_ELBOW"].runner.forward(probe), np.asarray(expert(probe)),
                                   atol=1e-6)
    finally:
        pipeline.close()


def test_start_up_log_names_the_backend_of_each_entry(int8_repository: tuple[Path, dict],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from app import create_app

    with caplog.at_level(logging.INFO, logger="web.loading"):
        app = create_app({"TESTING": True, "MODELS_DIR": str(int8_repository[0])})
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    models = client.get("/models").get_json()["models"]
    assert models["XR_WRIST"]["backend"] == "int8" and models["XR_WRIST"]["library"] == "openvino"
    assert "router.int8.xml@" in caplog.text and "(int8 backend, openvino, 32x32)" in caplog.text
    app.extensions["pipeline_loader"].pipeline.close()


def test_an_earlier_releases_onnx_runtime_int8_file_is_accepted_and_replaced(int8_repository: tuple[Path, dict],
                                                                              tmp_path: Path) -> None:
    folder = Path(shutil.copytree(int8_repository[0], tmp_path / "repository"))
    (folder / "router.int8.onnx").write_bytes((folder / "router.onnx").read_bytes())  # stands in for the old file
    manifest = json.loads((folder / "manifest.json").read_text())
    router = manifest["router"]
    for name in (router["files"].pop(INT8_FILE_KEY), router["files"].pop(INT8_WEIGHTS_FILE_KEY)):
        del router["sha256"][name]
    router["files"][LEGACY_ONNX_INT8_FILE_KEY] = "router.int8.onnx"
    router["sha256"]["router.int8.onnx"] = sha256_file(folder / "router.int8.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pipeline = Pipeline.load(folder, PipelineSettings(warmup=False))
    try:  # loads; auto no longer runs ONNX Runtime INT8 files: the router gets its fp32 export
        assert pipeline.models["router"].runner.backend == "onnx"
        assert pipeline.models["XR_HAND"].runner.backend == "int8"
    finally:
        pipeline.close()
    lines: list[str] = []
    optimize_repository(folder, log=lines.append)
    assert LEGACY_ONNX_INT8_FILE_KEY not in read_manifest(folder).router.files
    assert not (folder / "router.int8.onnx").exists()
    assert any(line.startswith("router") and "removed its INT8 model" in line for line in lines)


def _conventional_folder(folder: Path) -> Path:
    """Tiny models under the conventional names (body_part.json + .weights.h5, XR_*.json + ...), no manifest."""
    save_model(build_tiny_router(), folder, "body_part", "json+weights.h5")
    for index, part in enumerate(BODY_PARTS):
        save_model(build_tiny_expert(two_way=index % 2 == 1, seed=index + 1), folder, part, "json+weights.h5")
    return folder


def test_a_folder_without_manifest_is_prepared_end_to_end_with_a_manifest_and_checksums(
        validation_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _conventional_folder(tmp_path / "conventional")
    assert main([str(folder), "--int8", "--calibration", str(validation_folder)]) == 0
    assert "from the conventional names, with checksums" in capsys.readouterr().out
    manifest = read_manifest(folder)  # verifies every recorded sha256
    assert not manifest.conventional
    for role, entry in manifest.entries().items():
        stem = "body_part" if role == "router" else role
        assert entry.files["architecture"] == f"{stem}.json" and entry.input_size == (32, 32)
        assert set(entry.sha256) == set(entry.files.values())
        status = entry.extra[INT8_GUARD_KEY]["status"]  # random tiny models: the guard may refuse one
        assert (entry.files.get(INT8_FILE_KEY) == f"{role}.int8.xml") == (status == "passed")
        assert entry.files[ONNX_FILE_KEY] == f"{role}.onnx"
    assert manifest.experts["XR_FINGER"].classes == ("negative", "positive")  # completed from the model
    assert manifest.experts["XR_ELBOW"].threshold is None  # the default 0.5, said so at load: not chosen
    pipeline = Pipeline.load(folder)
    try:
        assert NO_MANIFEST_WARNING not in pipeline.warnings
        assert {loaded.runner.backend for loaded in pipeline.models.values()} <= {"int8", "onnx"}
    finally:
        pipeline.close()


def test_a_conventional_folder_with_a_model_that_does_not_load_stops_before_any_export(
        validation_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _conventional_folder(tmp_path / "conventional")
    weights = folder / "XR_WRIST.weights.h5"
    weights.write_bytes(weights.read_bytes()[:200])
    assert main([str(folder), "--int8", "--calibration", str(validation_folder)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "XR_WRIST.weights.h5" in line and "cannot load the XR_WRIST model" in line
    assert not list(folder.glob("*.onnx")) and not (folder / "manifest.json").exists()
