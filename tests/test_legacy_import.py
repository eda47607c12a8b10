"""Import of the original MURA project's model folder (irregular names, 2-way softmax experts)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from classifiers import ModelRepositoryError, Pipeline, PipelineSettings, ViewInput, decode_image, resize_image
from classifiers.body_parts import BODY_PARTS
from tests.support.helpers import encode_image
from tests.support.model_factory import build_tiny_expert, build_tiny_router
from training.import_original import main, role_of_file

# The original project's sixteen file names, exactly as it saved them (spaces and glued words included).
ORIGINAL_NAMES = {
    "router": ("model_architecture_ULCwAnshu.json", "modelMN_ULC_best03w Anshu.h5"),
    "XR_ELBOW": ("model_architectureXR_ELBOW final.json", "modelMNXR_ELBOW final.h5"),
    "XR_FINGER": ("model_architectureXR_FINGER_final.json", "modelMNXR_FINGER_final.h5"),
    "XR_FOREARM": ("model_architectureXR_FOREARM_final.json", "modelMNXR_FOREARM_final.h5"),
    "XR_HAND": ("model_architectureXR_HAND_final1.json", "modelMNXR_HAND_final1.h5"),
    "XR_HUMERUS": ("model_architectureXR_HUMERUS_final.json", "modelMNXR_HUMERUS_final.h5"),
    "XR_SHOULDER": ("model_architectureXR_SHOULDERfinal2.json", "modelMNXR_SHOULDERfinal2.h5"),
    "XR_WRIST": ("model_architecture_XR_WRIST_final.json", "model_MNXR_WRIST_final.h5"),
}


@pytest.fixture(scope="module")
def original_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the original project's, written by tf.keras 2 (tf_keras)."""
    folder = tmp_path_factory.mktemp("original")
    for role, (architecture, weights) in ORIGINAL_NAMES.items():
        if role == "router":
            model = build_tiny_router(library="tf_keras")
        else:
            model = build_tiny_expert(library="tf_keras", two_way=True, seed=BODY_PARTS.index(role))
        (folder / architecture).write_text(model.to_json())
        model.save_weights(str(folder / weights))
    return folder


@pytest.mark.parametrize(
    ("file_name", "role"),
    [(name, role) for role, names in ORIGINAL_NAMES.items() for name in names]
    + [("XR_HAND.h5", "XR_HAND"), ("xr_wrist-v2.json", "XR_WRIST"), ("XR_ELBOW1.h5", "XR_ELBOW")],
)
def test_role_of_file_reads_the_body_part_from_the_name(file_name: str, role: str) -> None:
    assert role_of_file(file_name) == role


@pytest.mark.parametrize(
    ("file_name", "message"),
    [("XR_HANDS.h5", "'XR_HANDS'"), ("modelXR_HANDFINAL.h5", "(XR_HAND_FINAL)"),
     ("xr_handfinal.json", "(xr_hand_final)"), ("XR_HAND_XR_WRIST.h5", "several body parts (XR_HAND, XR_WRIST)"),
     ("XR_WRISTfinal_XR_ELBOW.json", "several body parts (XR_ELBOW, XR_WRIST)")],
)
def test_role_of_file_refuses_ambiguous_names_and_says_how_to_rename(file_name: str, message: str) -> None:
    with pytest.raises(ModelRepositoryError, match=re.escape(message)):
        role_of_file(file_name)


def test_import_writes_a_manifest_that_loads_and_scores(original_folder: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(original_folder)]) == 0
    manifest = json.loads((original_folder / "manifest.json").read_text())
    assert manifest["router"]["files"] == {"architecture": ORIGINAL_NAMES["router"][0],
                                           "weights": ORIGINAL_NAMES["router"][1]}
    assert manifest["experts"]["XR_HAND"]["classes"] == ["negative", "positive"]
    assert manifest["router"]["preprocessing"] == "tf" and manifest["router"]["input_size"] == [32, 32]
    assert "wrote" in capsys.readouterr().out

    pipeline = Pipeline.load(original_folder, PipelineSettings(warmup=False))
    try:
        pixels = np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)
        data = encode_image(pixels)
        result = pipeline.predict_study([ViewInput("a.png", data)], body_part="XR_HAND")
        expert = pipeline.models["XR_HAND"].runner
        softmax = expert.predict(resize_image(decode_image(data), (32, 32))[None])
        assert softmax.shape == (1, 2)
        # Abnormality is P(positive), the second softmax column (not the first).
        assert result.abnormality == pytest.approx(float(softmax[0, 1]), abs=1e-6)
        assert result.abnormality != pytest.approx(float(softmax[0, 0]), abs=1e-3)
    finally:
        pipeline.close()


def test_import_refuses_to_overwrite_and_reports_missing_pairs(original_folder: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(original_folder)]) == 2
    assert "pass --force" in capsys.readouterr().err
    (tmp_path / "model_architectureXR_ELBOW final.json").write_text("{}")
    assert main([str(tmp_path)]) == 2
    assert "no .json + .h5 pair found for router" in capsys.readouterr().err


def test_service_starts_on_the_imported_folder_and_scores_a_shoulder_study(original_folder: Path) -> None:
    from app import create_app

    assert main([str(original_folder), "--force"]) == 0
    app = create_app({"TESTING": True, "MODELS_DIR": str(original_folder)})
    try:
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        pixels = np.random.default_rng(3).integers(0, 255, (64, 48), dtype=np.uint8)
        response = client.post("/predict", data={"image": (io.BytesIO(encode_image(pixels)), "view.png"),
                                                 "body_part": "shoulder"})
        assert response.status_code == 200, response.get_json()
        answer = response.get_json()
        assert answer["study"]["body_part"] == "XR_SHOULDER"
        assert answer["models"]["expert"].startswith("modelMNXR_SHOULDERfinal2.h5@")
        assert 0.0 <= answer["study"]["abnormality"] <= 1.0
    finally:
        app.extensions["pipeline_loader"].pipeline.close()


def test_import_names_the_files_of_a_role_that_cannot_be_paired(original_folder: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    for name in (*ORIGINAL_NAMES["router"], *ORIGINAL_NAMES["XR_WRIST"], "modelMNXR_WRIST_old.h5"):
        (tmp_path / name).write_bytes((original_folder / ORIGINAL_NAMES["XR_WRIST"][1]).read_bytes())
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    wrist_problem = error.index("the XR_WRIST needs exactly one .json and one .h5")
    assert wrist_problem < error.index("no .json + .h5 pair found for XR_ELBOW")
    assert "'modelMNXR_WRIST_old.h5'" in error and "move the extra" in error
