"""The out-of-domain gate: fitted on a real tiny repository's training views, it flags what is not a radiograph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifiers import ModelRepositoryError, Pipeline, PipelineSettings, ViewInput
from classifiers.errors import NotARadiograph
from classifiers.gate import GATE_FILE, GATE_KEY
from classifiers.repository.manifest import triage_warnings
from mura.studies import find_studies
from tests.support.helpers import encode_image
from training.fit_gate import fit_repository_gate, main
from training.synthetic import generate_dataset


@pytest.fixture(scope="module")
def gated_repository(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny repository with gate statistics fitted on 60 synthetic training studies."""
    folder = Path(shutil.copytree(tiny_repository, tmp_path_factory.mktemp("gated") / "repository"))
    data = tmp_path_factory.mktemp("gate-data")
    generate_dataset(data, 60, seed=5, split="train")
    paths = [path for study in find_studies(data / "train") for path in study.image_paths]
    fit_repository_gate(folder, paths, "unit-test training views", log=lambda line: None)
    return folder


@pytest.fixture(scope="module")
def held_out_views(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Views of synthetic studies drawn with another seed."""
    data = tmp_path_factory.mktemp("gate-heldout")
    generate_dataset(data, 10, seed=9, split="valid")
    return [path.read_bytes() for study in find_studies(data / "valid") for path in study.image_paths]


def _noise() -> bytes:
    return encode_image(np.random.default_rng(1).integers(0, 256, (200, 160), dtype=np.uint8))


def _blank() -> bytes:
    return encode_image(np.full((200, 160), 128, np.uint8))


def _colour_photo() -> bytes:
    rows, columns = np.mgrid[0:240, 0:320]
    pixels = np.stack([rows % 256, (columns * 2) % 256, (rows + columns) % 256], axis=-1).astype(np.uint8)
    return encode_image(pixels)


def test_fit_records_the_statistics_with_their_checksum(gated_repository: Path) -> None:
    record = json.loads((gated_repository / "manifest.json").read_text())[GATE_KEY]
    assert record["file"] == GATE_FILE and (gated_repository / GATE_FILE).is_file()
    assert record["views"] > 100 and record["threshold"] > 0


def test_gate_flags_noise_blank_and_a_colour_photo_but_not_radiographs(gated_repository: Path,
                                                                      held_out_views: list[bytes]) -> None:
    pipeline = Pipeline.load(gated_repository, PipelineSettings(warmup=False))
    try:
        for name, data in (("noise.png", _noise()), ("blank.png", _blank()), ("photo.png", _colour_photo())):
            view = pipeline.predict_study([ViewInput(name, data)]).images[0]
            assert view.out_of_distribution is True and view.ood_score > pipeline.gate.threshold, name
        flags = [pipeline.predict_study([ViewInput(f"v{index}.png", data)]).images[0].out_of_distribution
                 for index, data in enumerate(held_out_views)]
        assert sum(flags) <= 1 and len(flags) >= 20
        result = pipeline.predict_study([ViewInput("xray.png", held_out_views[0]), ViewInput("noise.png", _noise())])
        assert any("out of distribution" in warning and "noise.png" in warning and "xray.png" not in warning
                   for warning in result.warnings)
        assert pipeline.describe()["warnings"] == triage_warnings(pipeline.manifest)  # none about the gate
    finally:
        pipeline.close()


def test_refusing_flagged_views_raises_not_a_radiograph_naming_the_view(gated_repository: Path,
                                                                       held_out_views: list[bytes]) -> None:
    pipeline = Pipeline.load(gated_repository, PipelineSettings(warmup=False, reject_out_of_distribution=True))
    try:
        with pytest.raises(NotARadiograph, match="noise.png: does not look like a radiograph"):
            pipeline.predict_study([ViewInput("xray.png", held_out_views[0]), ViewInput("noise.png", _noise())])
        assert pipeline.predict_study([ViewInput("xray.png", held_out_views[0])]).images[0].out_of_distribution is False
    finally:
        pipeline.close()


def test_api_field_and_422_not_a_radiograph(gated_repository: Path, held_out_views: list[bytes]) -> None:
    from app import create_app

    for reject in (False, True):
        app = create_app({"TESTING": True, "MODELS_DIR": str(gated_repository), "WARMUP": False,
                          "REJECT_OUT_OF_DISTRIBUTION": reject})
        try:
            response = app.test_client().post("/predict", data=_colour_photo(), content_type="image/png")
            if reject:
                assert response.status_code == 422
                assert response.get_json()["error"]["code"] == "not_a_radiograph"
                assert "image1" in response.get_json()["error"]["message"]
            else:
                view = response.get_json()["images"][0]
                assert response.status_code == 200 and view["out_of_distribution"] is True
                assert view["ood_score"] > 0
        finally:
            app.extensions["pipeline_loader"].close()


@pytest.mark.parametrize("damage", ["missing", "corrupt", "replaced"])
def test_damaged_gate_statistics_stop_loading_with_a_clear_message(gated_repository: Path, tmp_path: Path,
                                                                   damage: str) -> None:
    folder = Path(shutil.copytree(gated_repository, tmp_path / "repository"))
    gate_file = folder / GATE_FILE
    if damage == "missing":
        gate_file.unlink()
    elif damage == "corrupt":
        gate_file.write_bytes(b"not an npz")
        manifest = json.loads((folder / "manifest.json").read_text())
        from classifiers.repository.entries import sha256_file

        manifest[GATE_KEY]["sha256"] = sha256_file(gate_file)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    else:
        gate_file.write_bytes(gate_file.read_bytes() + b"\0")
    message = {"missing": "gate statistics missing", "corrupt": "cannot be read", "replaced": "sha256 mismatch"}
    with pytest.raises(ModelRepositoryError, match=message[damage]):
        Pipeline.load(folder, PipelineSettings(warmup=False))


def test_fit_command_exits_2_with_one_line_for_a_missing_repository(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_score_py_counts_flagged_views(gated_repository: Path, tmp_path: Path) -> None:
    import csv

    import score

    study = tmp_path / "tree" / "study1"
    study.mkdir(parents=True)
    (study / "noise.png").write_bytes(_noise())
    Image.new("RGB", (160, 120), (200, 30, 30)).save(study / "red.png")
    out = tmp_path / "out.csv"
    assert score.main([str(tmp_path / "tree"), "--out", str(out), "--models", str(gated_repository),
                       "--no-progress"]) == 0
    with open(out, newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert row["n_out_of_distribution"] == "2" and "out of distribution" in row["warnings"]
