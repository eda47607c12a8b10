"""The optional ONNX Runtime backend: export of a real repository, results equal TensorFlow's, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifiers import ModelRepositoryError, Pipeline, PipelineSettings, ViewInput
from classifiers.body_parts import BODY_PARTS
from classifiers.repository.manifest import read_manifest, sha256_file
from tests.support.helpers import encode_image
from training.export_onnx import main

TOLERANCE = 1e-4
ROOT = Path(__file__).resolve().parents[1]


def test_export_covers_every_model_within_tolerance_of_keras(onnx_export: tuple[Path, dict[str, float]]) -> None:
    _, differences = onnx_export  # the session's export (conftest): the largest |ONNX - Keras| per model
    assert set(differences) == {"router", *BODY_PARTS}
    assert all(difference <= TOLERANCE for difference in differences.values())


def _study(seed: int, views: int = 3) -> list[ViewInput]:
    rng = np.random.default_rng(seed)
    return [ViewInput(f"view{index}.png", encode_image(rng.integers(0, 256, (60 + 7 * index, 50), dtype=np.uint8)))
            for index in range(views)]


def test_export_records_each_onnx_file_with_its_checksum(onnx_repository: Path) -> None:
    manifest = read_manifest(onnx_repository)  # verifies every sha256, the ONNX files' included
    for entry in manifest.entries().values():
        onnx_file = entry.files["onnx"]
        assert (onnx_repository / onnx_file).stat().st_size > 0
        assert entry.sha256[onnx_file] == sha256_file(onnx_repository / onnx_file)


@pytest.mark.parametrize("body_part", [None, "XR_ELBOW", "XR_FINGER"])  # a sigmoid and a 2-way softmax expert
def test_onnx_backend_gives_tensorflow_results(onnx_repository: Path, body_part: str | None) -> None:
    tensorflow = Pipeline.load(onnx_repository, PipelineSettings(backend="tensorflow"))
    onnx = Pipeline.load(onnx_repository, PipelineSettings(backend="onnx"))
    try:
        assert {loaded.runner.library for loaded in onnx.models.values()} == {"onnxruntime"}
        assert onnx.describe()["backend"] == "onnx" and tensorflow.describe()["backend"] == "tensorflow"
        assert onnx.describe()["models"]["router"]["library"] == "onnxruntime"
        assert set(onnx.describe()["versions"]) == {"python", "onnxruntime"}
        for seed in range(3):
            expected = tensorflow.predict_study(_study(seed), body_part=body_part)
            actual = onnx.predict_study(_study(seed), body_part=body_part)
            assert actual.body_part == expected.body_part
            assert actual.abnormality == pytest.approx(expected.abnormality, abs=TOLERANCE)
            for got, want in zip(actual.images, expected.images, strict=True):
                assert got.abnormality == pytest.approx(want.abnormality, abs=TOLERANCE)
                assert got.body_part_confidence == pytest.approx(want.body_part_confidence, abs=TOLERANCE)
    finally:
        tensorflow.close()
        onnx.close()


def test_onnx_backend_without_an_export_says_how_to_make_one(tiny_repository: Path) -> None:
    with pytest.raises(ModelRepositoryError, match=r"no ONNX export; run python -m training\.optimize"):
        Pipeline.load(tiny_repository, PipelineSettings(backend="onnx", warmup=False))


def test_unknown_backend_is_refused(tiny_repository: Path) -> None:
    with pytest.raises(ValueError, match="backend 'torch' unknown"):
        Pipeline.load(tiny_repository, PipelineSettings(backend="torch"))


def test_unreadable_onnx_file_stops_loading_with_its_name(onnx_repository: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(onnx_repository, tmp_path / "repository"))
    (folder / "XR_HAND.onnx").write_bytes(b"not an onnx model")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["experts"]["XR_HAND"]["sha256"]["XR_HAND.onnx"] = sha256_file(folder / "XR_HAND.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRepositoryError, match=r"XR_HAND\.onnx: cannot load the XR_HAND ONNX model"):
        Pipeline.load(folder, PipelineSettings(backend="onnx", warmup=False))


def test_cli_exits_2_with_one_line_for_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1


def test_onnx_pipeline_runs_without_importing_tensorflow(onnx_repository: Path) -> None:
    code = ("import sys\n"
            "from classifiers import Pipeline, PipelineSettings, ViewInput\n"
            "from tests.support.helpers import make_radiograph\n"
            f"pipeline = Pipeline.load({str(onnx_repository)!r}, PipelineSettings(backend='onnx'))\n"
            "result = pipeline.predict_study([ViewInput('a.png', make_radiograph())])\n"
            "pipeline.close()\n"
            "assert 0 <= result.abnormality <= 1\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_onnx_sessions_take_half_the_cores_unless_told(onnx_repository: Path) -> None:
    import os

    from classifiers.backends.onnx_backend import default_intra_op_threads

    assert default_intra_op_threads() == max(1, (os.cpu_count() or 2) // 2)
    for threads, expected in ((0, default_intra_op_threads()), (3, 3)):
        pipeline = Pipeline.load(onnx_repository, PipelineSettings(backend="onnx", warmup=False,
                                                                   intra_op_threads=threads))
        try:
            options = pipeline.models["router"].runner.session.get_session_options()
            assert options.intra_op_num_threads == expected
        finally:
            pipeline.close()
