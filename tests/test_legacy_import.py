"""Import of the original MURA project's model folder (irregular names, 2-way softmax experts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifiers import Pipeline, PipelineSettings, ViewInput, decode_image, resize_image
from classifiers.legacy_import import main, role_of_file
from classifiers.manifest import BODY_PARTS
from tests.conftest import encode_image
from tests.model_factory import build_tiny_expert, build_tiny_router

# The original project's file names, spaces included.
ORIGINAL_NAMES = {
    "router": ("model_architecture_ULCwAnshu.json", "modelMN_ULC_best03w Anshu.h5"),
    "XR_ELBOW": ("model_architectureXR_ELBOW final.json", "modelMNXR_ELBOW final.h5"),
    "XR_FINGER": ("model_architectureXR_FINGER final.json", "modelMNXR_FINGER final.h5"),
    "XR_FOREARM": ("model_architectureXR_FOREARM final.json", "modelMNXR_FOREARM final.h5"),
    "XR_HAND": ("model_architectureXR_HAND_final1.json", "modelMNXR_HAND_final1.h5"),
    "XR_HUMERUS": ("model_architectureXR_HUMERUS final.json", "modelMNXR_HUMERUS final.h5"),
    "XR_SHOULDER": ("model_architectureXR_SHOULDER final.json", "modelMNXR_SHOULDER final.h5"),
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
    [("modelMNXR_ELBOW final.h5", "XR_ELBOW"), ("model_MNXR_WRIST_final.h5", "XR_WRIST"),
     ("model_architectureXR_HAND_final1.json", "XR_HAND"), ("modelMN_ULC_best03w Anshu.h5", "router")],
)
def test_role_of_file_reads_the_body_part_from_the_name(file_name: str, role: str) -> None:
    assert role_of_file(file_name) == role


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
        expert = pipeline.models["XR_HAND"].compiled
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
