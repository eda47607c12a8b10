"""score.py --engine ray on a local Ray (2 CPUs, 2 actors): same rows as the local engine, resume, errors."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

import score
from mura.studies import Study
from scoring.output import PREDICTION_COLUMNS, read_predictions
from scoring.ray_engine import STUDIES_PER_BATCH, ray_address, study_dataset
from training.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
NUMERIC_COLUMNS = ("body_part_confidence", "abnormality", "threshold")


def _read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["study"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def study_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MURA valid tree of 10 studies, one holding a truncated image, one only a text file."""
    root = tmp_path_factory.mktemp("ray-data") / "MURA-v1.1"
    folders = generate_dataset(root, 10, seed=11, split="valid")
    first = sorted(folders[0].glob("*.png"))[0]
    (folders[0] / "image9.png").write_bytes(first.read_bytes()[:300])
    unreadable = root / "valid" / "XR_HAND" / "patient99999" / "study1_negative"
    unreadable.mkdir(parents=True)
    (unreadable / "image1.png").write_text("not a PNG")
    return root / "valid"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the in-process tests (score.py reuses it and leaves it running)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_engine_gives_the_local_engine_rows(study_tree: Path, onnx_repository: Path, tmp_path: Path,
                                                local_ray) -> None:
    # The ONNX repository: the engines are compared on the same models, and no actor imports TensorFlow.
    common = [str(study_tree), "--models", str(onnx_repository), "--no-progress"]
    assert score.main([*common, "--out", str(tmp_path / "local.csv")]) == 0
    assert score.main([*common, "--out", str(tmp_path / "ray.csv"), "--engine", "ray", "--workers", "2"]) == 0
    local, distributed = _read_rows(tmp_path / "local.csv"), _read_rows(tmp_path / "ray.csv")
    assert set(distributed) == set(local) and len(local) == 11
    with open(tmp_path / "ray.csv", encoding="utf-8") as handle:
        assert tuple(handle.readline().strip().split(",")) == PREDICTION_COLUMNS
    for study, expected in local.items():
        got = distributed[study]
        for column in PREDICTION_COLUMNS:
            if column in NUMERIC_COLUMNS and expected[column]:
                assert float(got[column]) == pytest.approx(float(expected[column]), abs=1e-5), (study, column)
            else:
                assert got[column] == expected[column], (study, column)
    local_errors = _read_rows(tmp_path / "local_errors.csv")
    assert _read_rows(tmp_path / "ray_errors.csv") == local_errors and len(local_errors) == 2


def test_ray_engine_run_killed_midway_resumes_without_a_missing_or_doubled_study(
        study_tree: Path, onnx_repository: Path, tmp_path: Path, local_ray, capsys: pytest.CaptureFixture) -> None:
    tree = tmp_path / "tree"
    for copy_index in range(6):  # 66 studies: enough batches that the kill lands mid-run
        for study in study_tree.glob("XR_*/patient*/study*"):
            shutil.copytree(study, tree / study.parent.parent.name / f"{study.parent.name}_{copy_index}" / study.name)
    num_studies = len(list(tree.glob("XR_*/patient*/study*")))
    out = tmp_path / "predictions.csv"
    arguments = [str(tree), "--out", str(out), "--models", str(onnx_repository), "--engine", "ray", "--workers", "2",
                 "--no-progress"]
    command = [sys.executable, "score.py", *arguments]
    environment = dict(os.environ)
    # Its own session: the kill takes the driver and the local Ray it started, as a lost machine would.
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 5:  # header + 4 rows
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    rows_after_kill = len(read_predictions(out))
    assert 4 <= rows_after_kill < num_studies, "the kill must land mid-run for this test to mean anything"
    # The rerun resumes in this process, on the module's Ray (a run starting its own Ray is the one killed above,
    # and the error test's).
    capsys.readouterr()
    assert score.main(arguments) == 0
    assert f"{rows_after_kill} already in" in capsys.readouterr().err
    study_ids = list(_read_rows(out))
    with open(out, encoding="utf-8") as handle:
        assert sum(1 for _ in handle) - 1 == num_studies == len(study_ids)


def test_repository_that_does_not_load_in_the_actors_is_one_line(study_tree: Path, onnx_repository: Path,
                                                                 tmp_path: Path) -> None:
    models = Path(shutil.copytree(onnx_repository, tmp_path / "models"))
    (models / "XR_HAND.onnx").write_bytes(b"not ONNX")  # checksum updated: only loading can tell
    manifest = json.loads((models / "manifest.json").read_text())
    from classifiers.repository.manifest import sha256_file

    manifest["experts"]["XR_HAND"]["sha256"]["XR_HAND.onnx"] = sha256_file(models / "XR_HAND.onnx")
    (models / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run([sys.executable, "score.py", str(study_tree), "--out", str(tmp_path / "out.csv"),
                             "--models", str(models), "--engine", "ray", "--workers", "2", "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("score.py: error: the models in") and "XR_HAND.onnx" in lines[-1]
    assert "Traceback" not in result.stderr and "ray" not in "\n".join(lines[1:-1]).lower()


def test_without_ray_the_engine_says_what_to_install(study_tree: Path, tiny_repository: Path,
                                                     tmp_path: Path) -> None:
    blocker = tmp_path / "no_ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    result = subprocess.run([sys.executable, "score.py", str(study_tree), "--out", str(tmp_path / "out.csv"),
                             "--models", str(tiny_repository), "--engine", "ray", "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(blocker.parent)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "score.py: error: the ray engine needs Ray: pip install -r requirements-ray.txt")


def test_studies_are_cut_into_one_block_per_actor_call(local_ray) -> None:
    # Rows stream back per block: an archive must not become a few hundred blocks of thousands of studies.
    studies = [Study(f"XR_HAND/patient{index:05d}/study1", (Path(f"/archive/{index}/image1.png"),), None, None)
               for index in range(2000)]
    dataset = study_dataset(ray, studies).materialize()
    assert dataset.num_blocks() == math.ceil(len(studies) / STUDIES_PER_BATCH)
    assert sorted(row["study_id"] for row in dataset.iter_rows()) == sorted(study.study_id for study in studies)


@pytest.mark.parametrize(
    ("option", "environment", "address"),
    [
        (None, {}, "local"),  # a Ray of its own, never a cluster someone else started on this machine
        (None, {"RAY_ADDRESS": "10.0.0.5:6379"}, "10.0.0.5:6379"),  # as `ray job submit` runs the command
        ("auto", {"RAY_ADDRESS": "10.0.0.5:6379"}, "auto"),
        ("ray://head:10001", {}, "ray://head:10001"),
    ],
)
def test_ray_address_is_the_option_then_ray_address_then_a_local_ray(option, environment, address) -> None:
    assert ray_address(option, environment) == address
