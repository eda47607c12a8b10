"""Model repository: every file format loads, every manifest fault stops start-up with its message."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifiers import ModelRepositoryError, Pipeline, PipelineSettings
from classifiers.body_parts import BODY_PARTS
from classifiers.gate import NO_GATE_WARNING
from classifiers.repository.entries import OperatingPoints
from classifiers.repository.manifest import (
    NO_MANIFEST_WARNING,
    read_manifest,
    sha256_file,
    triage_warnings,
    update_manifest_entry,
)
from classifiers.results import ViewInput
from tests.support.helpers import encode_image
from tests.support.model_factory import (
    ALL_FORMATS,
    build_tiny_expert,
    build_tiny_router,
    write_repository,
    write_tiny_repository,
)

PROBE = np.random.default_rng(7).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
FAST = PipelineSettings(warmup=False)

GRAY_PNG = encode_image(np.zeros((40, 40, 3), dtype=np.uint8), mode="RGB")


def _probe_outputs(pipeline: Pipeline) -> dict[str, np.ndarray]:
    return {role: loaded.runner.predict(PROBE) for role, loaded in pipeline.models.items()}


@pytest.fixture(scope="module")
def reference_outputs(tiny_repository: Path) -> dict[str, np.ndarray]:
    pipeline = Pipeline.load(tiny_repository, FAST)
    try:
        return _probe_outputs(pipeline)
    finally:
        pipeline.close()


@pytest.mark.parametrize("file_format", ALL_FORMATS)
def test_every_format_loads_and_predicts_like_the_saved_model(tmp_path: Path, file_format: str,
                                                              reference_outputs: dict[str, np.ndarray]) -> None:
    # The factory seeds every model the same way, so each format must reproduce the reference outputs.
    write_tiny_repository(tmp_path, file_format=file_format)
    pipeline = Pipeline.load(tmp_path, FAST)
    try:
        for role, outputs in _probe_outputs(pipeline).items():
            np.testing.assert_allclose(outputs, reference_outputs[role], atol=1e-5, err_msg=role)
        library = pipeline.describe()["models"]["router"]["library"]
        assert library == ("tf_keras" if file_format.startswith("tf_keras") else "keras")
    finally:
        pipeline.close()


def _tf_keras_mobilenet_router():
    """A tf.keras 2 Sequential wrapping a MobileNet, as the original MURA project built its models."""
    import tf_keras

    backbone = tf_keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False,
                                               weights=None, pooling="avg")
    return tf_keras.Sequential([backbone, tf_keras.layers.Dense(7, activation="softmax")])


@pytest.mark.parametrize("layout", ["json+h5", "h5"])
def test_tf_keras_sequential_mobilenet_with_batchnorm_loads(tmp_path: Path, layout: str) -> None:
    import keras

    router = _tf_keras_mobilenet_router()
    experts = {part: build_tiny_expert(library="tf_keras", two_way=True, seed=3) for part in BODY_PARTS}
    write_repository(tmp_path, router, experts, file_format=f"tf_keras:{layout}", preprocessing="tf")
    if layout == "json+h5":
        # Keras 3 alone cannot read this file: that is why tf_keras is a dependency.
        with pytest.raises(Exception):  # noqa: B017 - Keras raises TypeError or ValueError by version
            keras.models.model_from_json((tmp_path / "router.json").read_text())
    pipeline = Pipeline.load(tmp_path, FAST)
    try:
        images = PROBE.astype(np.float32) / 127.5 - 1
        expected = router(images, training=False).numpy()
        np.testing.assert_allclose(pipeline.models["router"].runner.predict(PROBE), expected, atol=1e-5)
    finally:
        pipeline.close()


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _replace_model(folder: Path, stem: str, model) -> None:
    """Overwrite one model's files and record their new checksums, as a careless retrain would."""
    (folder / f"{stem}.json").write_text(model.to_json())
    model.save_weights(str(folder / f"{stem}.weights.h5"))

    def edit(manifest):
        entry = manifest["router"] if stem == "router" else manifest["experts"][stem]
        entry["sha256"] = {name: sha256_file(folder / name) for name in entry["files"].values()}

    _edit_manifest(folder, edit)


@pytest.fixture
def repository_copy(tiny_repository: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_repository, tmp_path / "repository"))


def _break_sha(folder: Path) -> None:
    with open(folder / "XR_HAND.weights.h5", "ab") as handle:
        handle.write(b"\0")


def _delete_file(folder: Path) -> None:
    (folder / "XR_WRIST.json").unlink()


def _garbage_weights(folder: Path) -> None:
    (folder / "XR_ELBOW.weights.h5").write_bytes(b"not an hdf5 file")
    _edit_manifest(folder, lambda m: m["experts"]["XR_ELBOW"]["sha256"].update(
        {"XR_ELBOW.weights.h5": sha256_file(folder / "XR_ELBOW.weights.h5")}))


MANIFEST_FAULTS = [
    ("sha256 mismatch", _break_sha, r"XR_HAND\.weights\.h5: sha256 mismatch"),
    ("missing file", _delete_file, r"XR_WRIST\.json: model file missing"),
    ("unreadable file", _garbage_weights, r"XR_ELBOW\.weights\.h5: cannot load the XR_ELBOW model"),
    ("invalid json", lambda f: (f / "manifest.json").write_text("{not json"), r"manifest\.json: not valid JSON"),
    ("no router", lambda f: _edit_manifest(f, lambda m: m.pop("router")), r"no 'router' entry"),
    ("missing expert", lambda f: _edit_manifest(f, lambda m: m["experts"].pop("XR_FINGER")),
     r"no expert for XR_FINGER"),
    ("bad version", lambda f: _edit_manifest(f, lambda m: m.update(format_version=9)), r"format_version must be 1"),
    ("bad preprocessing", lambda f: _edit_manifest(f, lambda m: m["router"].update(preprocessing="densenet")),
     r"preprocessing 'densenet' unknown; valid: caffe, tf, torch, unit"),
    ("wrong input size", lambda f: _edit_manifest(f, lambda m: m["router"].update(input_size=[64, 64])),
     r"input is 32x32 but manifest\.json says \[64, 64\]"),
    ("bad threshold", lambda f: _edit_manifest(f, lambda m: m["experts"]["XR_HAND"].update(threshold=1.5)),
     r"threshold must be a number in \[0, 1\]"),
    ("rule-out above rule-in", lambda f: _edit_manifest(f, lambda m: m["experts"]["XR_HAND"].update(
        operating_points={"rule_out": {"threshold": 0.7}, "rule_in": {"threshold": 0.6}})),
     r"XR_HAND\]: operating_points must be"),
    ("router operating points", lambda f: _edit_manifest(f, lambda m: m["router"].update(
        operating_points={"rule_out": {"threshold": 0.1}, "rule_in": {"threshold": 0.6}})),
     r"the router has no operating points"),
    ("zero temperature", lambda f: _edit_manifest(f, lambda m: m["experts"]["XR_HAND"].update(
        calibration={"method": "temperature", "temperature": 0})), r"XR_HAND\]: calibration must be"),
    ("unknown calibration", lambda f: _edit_manifest(f, lambda m: m["experts"]["XR_HAND"].update(
        calibration={"method": "isotonic", "temperature": 1})), r"XR_HAND\]: calibration must be"),
    ("bad expert classes",
     lambda f: _edit_manifest(f, lambda m: m["experts"]["XR_HAND"].update(classes=["x", "y", "z"])),
     r"expert classes must be"),
    ("router not 7-way", lambda f: _replace_model(f, "router", build_tiny_expert(two_way=True)),
     r"router\.weights\.h5: the router must end in a 7-way softmax; it has 2 output"),
    ("expert 7-way", lambda f: _replace_model(f, "XR_SHOULDER", build_tiny_router()),
     r"XR_SHOULDER\.weights\.h5: the XR_SHOULDER expert must end in a 1-unit sigmoid or a 2-way softmax"),
]


@pytest.mark.parametrize(("fault", "make_fault", "message"), MANIFEST_FAULTS, ids=[f[0] for f in MANIFEST_FAULTS])
def test_repository_fault_stops_loading_with_a_message(repository_copy: Path, fault: str, make_fault,
                                                       message: str) -> None:
    make_fault(repository_copy)
    with pytest.raises(ModelRepositoryError, match=message):
        Pipeline.load(repository_copy, FAST)


def test_missing_repository_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelRepositoryError, match="model repository folder not found"):
        read_manifest(tmp_path / "nowhere")


def test_conventional_names_load_without_a_manifest(tmp_path: Path, caplog) -> None:
    router = build_tiny_router()
    (tmp_path / "body_part.json").write_text(router.to_json())
    router.save_weights(str(tmp_path / "body_part.weights.h5"))
    for index, part in enumerate(BODY_PARTS):
        expert = build_tiny_expert(two_way=index == 0)
        (tmp_path / f"{part}.json").write_text(expert.to_json())
        expert.save_weights(str(tmp_path / f"{part}.weights.h5"))
    with caplog.at_level(logging.WARNING, logger="classifiers.pipeline"):
        pipeline = Pipeline.load(tmp_path, FAST)
    try:
        assert pipeline.models["XR_ELBOW"].entry.classes == ("negative", "positive")
        assert pipeline.models["XR_HAND"].entry.classes == ("abnormal",)
        assert pipeline.models["router"].input_size == (32, 32)
        assert pipeline.manifest.experts["XR_ELBOW"].input_size == (32, 32)  # completed from the model
        assert read_manifest(tmp_path).experts["XR_ELBOW"].classes == ("abnormal",)  # reading changes nothing
        # Loud at start-up, in /models' description and in every answer: defaults, not chosen thresholds.
        assert any("no manifest.json" in record.getMessage() and "0.5" in record.getMessage()
                   for record in caplog.records)
        assert pipeline.describe()["warnings"] == [NO_MANIFEST_WARNING, NO_GATE_WARNING,
                                                   *triage_warnings(pipeline.manifest)]
        result = pipeline.predict_study([ViewInput("a.png", GRAY_PNG)])
        assert result.to_dict()["study"]["threshold_source"] == "default (no manifest.json)"
    finally:
        pipeline.close()


def test_manifest_thresholds_are_reported_as_such(tiny_pipeline) -> None:
    result = tiny_pipeline.predict_study([ViewInput("a.png", GRAY_PNG)], body_part="XR_HAND")
    assert result.threshold_source == "manifest"
    # The tiny repository has no gate, no operating points and no calibration.
    assert tiny_pipeline.describe()["warnings"] == [NO_GATE_WARNING, *triage_warnings(tiny_pipeline.manifest)]


def test_architecture_compiled_with_an_unknown_custom_loss_still_loads(repository_copy: Path) -> None:
    # Keras 3's to_json() records the optimizer and loss; a training-only loss class is not importable here.
    expert = build_tiny_expert(seed=4)  # one sigmoid unit, as XR_ELBOW in the tiny repository
    expert.compile(optimizer="adam", loss="binary_crossentropy")
    architecture = json.loads(expert.to_json())
    architecture["compile_config"]["loss"] = {"module": None, "class_name": "TrainingOnlyLoss", "config": {},
                                              "registered_name": "training>TrainingOnlyLoss"}
    (repository_copy / "XR_ELBOW.json").write_text(json.dumps(architecture))
    expert.save_weights(str(repository_copy / "XR_ELBOW.weights.h5"))
    _edit_manifest(repository_copy, lambda manifest: manifest["experts"]["XR_ELBOW"].__setitem__(
        "sha256", {name: sha256_file(repository_copy / name)
                   for name in manifest["experts"]["XR_ELBOW"]["files"].values()}))
    pipeline = Pipeline.load(repository_copy, FAST)
    try:
        probe = np.full((1, 32, 32, 3), 0.25, np.float32)
        loaded = pipeline.models["XR_ELBOW"].runner.forward(probe)
        np.testing.assert_allclose(loaded, np.asarray(expert(probe)), atol=1e-6)
    finally:
        pipeline.close()


def test_update_manifest_entry_creates_and_replaces(tmp_path: Path, tiny_repository: Path) -> None:
    entry = read_manifest(tiny_repository).experts["XR_HAND"]
    update_manifest_entry(tmp_path, entry)
    update_manifest_entry(tmp_path, dataclasses.replace(entry, threshold=0.3))
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["format_version"] == 1 and written["experts"]["XR_HAND"]["threshold"] == 0.3
    assert written["experts"]["XR_HAND"]["files"] == dict(entry.files)
    with pytest.raises(ValueError, match="unknown role 'XR_KNEE'"):
        update_manifest_entry(tmp_path, dataclasses.replace(entry, role="XR_KNEE"))


def test_manifest_is_parsed_once_into_frozen_entries_that_round_trip(tiny_repository: Path, tmp_path: Path) -> None:
    raw = json.loads((tiny_repository / "manifest.json").read_text())
    raw["experts"]["XR_HAND"]["explain_layer"] = "conv"  # a key this version does not know is kept
    folder = Path(shutil.copytree(tiny_repository, tmp_path / "copy"))
    (folder / "manifest.json").write_text(json.dumps(raw))
    manifest = read_manifest(folder)
    assert list(manifest.entries()) == ["router", *BODY_PARTS]
    hand = manifest.entry("XR_HAND")
    assert hand.extra == {"explain_layer": "conv"} and hand.role == "XR_HAND"
    assert manifest.to_json() == raw
    with pytest.raises(dataclasses.FrozenInstanceError):
        hand.threshold = 0.1  # type: ignore[misc]
    expected_column = 1 if hand.classes == ("negative", "positive") else 0
    assert hand.positive_column == expected_column
    assert hand.version(hand.keras_file) == f"{hand.keras_file}@{hand.sha256[hand.keras_file][:12]}"


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_conventional_full_model_h5_files_load_without_a_manifest(tmp_path: Path, library: str) -> None:
    router = build_tiny_router(library=library)
    router.save(str(tmp_path / "body_part.h5"))
    experts = {part: build_tiny_expert(two_way=index == 0, library=library, seed=index + 1)
               for index, part in enumerate(BODY_PARTS)}
    for part, expert in experts.items():
        expert.save(str(tmp_path / f"{part}.h5"))
    assert not list(tmp_path.glob("*.json"))
    pipeline = Pipeline.load(tmp_path, FAST)
    try:
        assert dict(pipeline.models["router"].entry.files) == {"model": "body_part.h5"}
        assert pipeline.models["XR_ELBOW"].entry.classes == ("negative", "positive")
        assert pipeline.models["XR_HAND"].entry.classes == ("abnormal",)
        probe = PROBE.astype(np.float32) / 255.0  # the conventional default preprocessing is "tf": [-1, 1]
        for role, model in [("router", router), *experts.items()]:
            expected = np.asarray(model(probe * 2.0 - 1.0))
            np.testing.assert_allclose(pipeline.models[role].runner.predict(PROBE), expected, atol=1e-5)
    finally:
        pipeline.close()


def test_calibration_and_operating_points_reach_every_answer(repository_copy: Path) -> None:
    raw_pipeline = Pipeline.load(repository_copy, FAST)
    try:
        view = ViewInput("view.png", encode_image(np.full((40, 40), 120, np.uint8)))
        raw = raw_pipeline.predict_study([view], body_part="XR_HAND")
    finally:
        raw_pipeline.close()
    assert raw.triage is None and raw.operating_points is None and not raw.calibrated
    assert raw.to_dict()["study"]["triage"] is None
    points = {"rule_out": {"threshold": raw.abnormality / 2, "target": 0.95},
              "rule_in": {"threshold": (1 + raw.abnormality) / 2, "target": 0.95}}
    _edit_manifest(repository_copy, lambda m: m["experts"]["XR_HAND"].update(
        calibration={"method": "platt", "temperature": 2.0, "bias": 0.5}, operating_points=points))
    pipeline = Pipeline.load(repository_copy, FAST)
    try:
        study = pipeline.predict_study([view], body_part="XR_HAND")
    finally:
        pipeline.close()
    logit = np.log(raw.abnormality / (1 - raw.abnormality))
    assert study.abnormality == pytest.approx(1 / (1 + np.exp(-(logit / 2.0 + 0.5))), abs=1e-6)
    assert study.calibrated and study.operating_points == {"rule_out": raw.abnormality / 2,
                                                           "rule_in": (1 + raw.abnormality) / 2}
    models = pipeline.describe()["models"]
    assert models["XR_HAND"]["operating_points"] == study.operating_points
    assert models["XR_HAND"]["calibration"] == {"method": "platt", "temperature": 2.0, "bias": 0.5}
    assert models["XR_WRIST"]["operating_points"] is None and models["XR_WRIST"]["calibration"] is None
    assert "operating_points" not in models["router"]
    points_warning, calibration_warning = triage_warnings(pipeline.manifest)
    assert "XR_WRIST" in points_warning and "XR_HAND" not in points_warning and "triage null" in points_warning
    assert "XR_HAND" not in calibration_warning and "python -m training.operating_points" in calibration_warning
    assert [points_warning, calibration_warning] == pipeline.describe()["warnings"][-2:]
    expected = pipeline.manifest.entry("XR_HAND").operating_points.category(study.abnormality)
    assert study.triage == expected and study.to_dict()["study"]["triage"] == expected
    assert read_manifest(repository_copy).to_json() == json.loads((repository_copy / "manifest.json").read_text())


@pytest.mark.parametrize(("score", "category"), [(0.09, "low"), (0.1, "indeterminate"), (0.59, "indeterminate"),
                                                 (0.6, "flagged"), (1.0, "flagged")])
def test_triage_category_at_the_two_operating_points(score: float, category: str) -> None:
    points = OperatingPoints.from_json({"rule_out": {"threshold": 0.1}, "rule_in": {"threshold": 0.6}})
    assert points.category(score) == category
