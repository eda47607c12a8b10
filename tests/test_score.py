"""score.py end to end on synthetic MURA trees with the tiny real models, plus its report pieces."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

import score
from classifiers import Pipeline, PipelineSettings
from classifiers.body_parts import BODY_PARTS
from classifiers.repository.manifest import read_manifest
from mura.studies import find_studies
from scoring.output import PREDICTION_COLUMNS, read_predictions
from scoring.runner import score_studies
from tests.support.triage_repository import triaged_copy
from training.synthetic import generate_dataset

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
NUM_STUDIES = 14
UNSCORED_STUDY = "XR_WRIST/patient99999/study1_positive"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def mura_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MURA-v1.1/valid tree with one truncated image and one study of unreadable files only."""
    root = tmp_path_factory.mktemp("data") / "MURA-v1.1"
    study_folders = generate_dataset(root, NUM_STUDIES, seed=3, split="valid")
    first_image = sorted(study_folders[0].glob("*.png"))[0]
    truncated = study_folders[0] / "image9.png"
    truncated.write_bytes(first_image.read_bytes()[:200])
    unscored = root / "valid" / UNSCORED_STUDY
    unscored.mkdir(parents=True)
    (unscored / "image1.png").write_text("this is not a PNG")
    return root


@pytest.fixture(scope="module")
def scored_tree(mura_root: Path, tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full in-process run over the tree with report and worklist; returns its paths and exit code."""
    out_folder = tmp_path_factory.mktemp("scored")
    out = out_folder / "predictions.csv"
    exit_code = score.main([
        str(mura_root / "valid"), "--out", str(out), "--models", str(tiny_repository), "--report",
        str(out_folder / "report"), "--worklist", "--bootstrap-replicates", "50", "--no-progress",
        "--workers", "4",
    ])
    return {"exit_code": exit_code, "out": out, "folder": out_folder}


def test_scoring_a_mura_tree_writes_one_row_per_study(scored_tree: dict, mura_root: Path) -> None:
    assert scored_tree["exit_code"] == 0
    rows = _read_csv(scored_tree["out"])
    assert tuple(rows[0].keys()) == PREDICTION_COLUMNS
    study_ids = sorted(row["study"] for row in rows)
    expected_ids = sorted(
        str(folder.relative_to(mura_root / "valid").as_posix())
        for folder in (mura_root / "valid").glob("XR_*/patient*/study*")
    )
    assert study_ids == expected_ids and len(rows) == NUM_STUDIES + 1
    for row in rows:
        assert row["true_body_part"] in BODY_PARTS
        assert row["true_label"] == ("1" if row["study"].endswith("_positive") else "0")
        if row["study"] != UNSCORED_STUDY:
            assert row["body_part"] in BODY_PARTS
            assert 0.0 <= float(row["abnormality"]) <= 1.0
            assert row["label"] == ("abnormal" if float(row["abnormality"]) >= float(row["threshold"]) else "normal")
            assert int(row["n_images"]) == len(list((mura_root / "valid" / row["study"]).glob("*.png"))) - int(
                row["n_unreadable"])


def test_bad_images_are_named_in_warnings_and_errors_file(scored_tree: dict) -> None:
    rows = {row["study"]: row for row in _read_csv(scored_tree["out"])}
    errors = _read_csv(scored_tree["folder"] / "predictions_errors.csv")
    assert sorted((row["error"], Path(row["image"]).name) for row in errors) == [
        ("TruncatedImage", "image9.png"), ("UnreadableImage", "image1.png")]
    truncated_study = next(row["study"] for row in errors if row["error"] == "TruncatedImage")
    assert "image9.png" in rows[truncated_study]["warnings"]
    assert rows[truncated_study]["n_unreadable"] == "1" and rows[truncated_study]["label"] in ("normal", "abnormal")
    unscored = rows[UNSCORED_STUDY]
    assert (unscored["label"], unscored["n_images"], unscored["abnormality"]) == ("unscored", "0", "")
    assert "no readable image" in unscored["warnings"] and "image1.png" in unscored["warnings"]


def test_worklist_lists_unscored_first_then_by_abnormality(scored_tree: dict) -> None:
    worklist = _read_csv(scored_tree["folder"] / "predictions_worklist.csv")
    assert len(worklist) == NUM_STUDIES + 1
    assert worklist[0]["study"] == UNSCORED_STUDY and worklist[0]["priority"] == "unscored: read first"
    scores = [float(row["abnormality"]) for row in worklist[1:]]
    assert scores == sorted(scores, reverse=True)
    assert [row["rank"] for row in worklist] == [str(rank) for rank in range(1, NUM_STUDIES + 2)]


def test_report_figures_match_scikit_learn_on_the_same_predictions(scored_tree: dict) -> None:
    report = json.loads((scored_tree["folder"] / "report" / "report.json").read_text())
    rows = [row for row in _read_csv(scored_tree["out"]) if row["label"] != "unscored"]
    y_true = np.array([int(row["true_label"]) for row in rows])
    y_score = np.array([float(row["abnormality"]) for row in rows])
    y_pred = np.array([int(row["label"] == "abnormal") for row in rows])
    overall = report["abnormality"]["overall"]
    assert overall["n_studies"] == NUM_STUDIES and report["studies"]["unscored"] == 1
    assert overall["auroc"]["value"] == pytest.approx(sk_metrics.roc_auc_score(y_true, y_score))
    assert overall["accuracy"]["value"] == pytest.approx(sk_metrics.accuracy_score(y_true, y_pred))
    assert overall["sensitivity"]["value"] == pytest.approx(sk_metrics.recall_score(y_true, y_pred))
    true_parts = [row["true_body_part"] for row in rows]
    routed_parts = [row["body_part"] for row in rows]
    assert report["routing"]["accuracy"]["value"] == pytest.approx(sk_metrics.accuracy_score(true_parts, routed_parts))
    assert report["routing"]["confusion_matrix"] == sk_metrics.confusion_matrix(
        true_parts, routed_parts, labels=list(BODY_PARTS)).tolist()
    markdown = (scored_tree["folder"] / "report" / "report.md").read_text()
    assert "0.705 (0.700, 0.710)" in markdown and "| **Overall** |" in markdown
    assert (scored_tree["folder"] / "report" / "roc_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_over_a_complete_output_scores_nothing_more(scored_tree: dict, mura_root: Path,
                                                          tiny_repository: Path, capsys) -> None:
    before = scored_tree["out"].read_bytes()
    exit_code = score.main([str(mura_root / "valid"), "--out", str(scored_tree["out"]), "--models",
                            str(tiny_repository), "--no-progress"])
    assert exit_code == 0
    assert scored_tree["out"].read_bytes() == before
    assert f"{NUM_STUDIES + 1} already in" in capsys.readouterr().err


def test_with_operating_points_the_csv_worklist_and_report_carry_the_triage_category(
        scored_tree: dict, mura_root: Path, tiny_repository: Path, tmp_path: Path) -> None:
    scores = sorted(float(row["abnormality"]) for row in _read_csv(scored_tree["out"]) if row["abnormality"])
    # Midway between two studies' scores (so a score rounded in the CSV is on the same side), each category filled.
    rule_out, rule_in = [(scores[index - 1] + scores[index]) / 2 for index in (len(scores) // 3, 2 * len(scores) // 3)]
    calibration = {"method": "temperature", "temperature": 1.0, "ece_before": 0.2, "ece_after": 0.04}
    models = triaged_copy(tiny_repository, tmp_path / "models", rule_out, rule_in, calibration)
    out = tmp_path / "predictions.csv"
    assert score.main([str(mura_root / "valid"), "--out", str(out), "--models", str(models), "--report",
                       str(tmp_path / "report"), "--worklist", "--bootstrap-replicates", "20", "--no-progress"]) == 0
    rows = _read_csv(out)
    points = read_manifest(models).experts["XR_HAND"].operating_points  # the same points for every expert
    for row in rows:
        expected = points.category(float(row["abnormality"])) if row["abnormality"] else ""
        assert row["triage"] == expected, row["study"]
    assert {row["triage"] for row in rows} == {"flagged", "indeterminate", "low", ""}
    worklist = _read_csv(tmp_path / "predictions_worklist.csv")
    ranks = {"flagged": 1, "indeterminate": 2, "low": 3}
    assert worklist[0]["study"] == UNSCORED_STUDY
    assert [ranks[row["triage"]] for row in worklist[1:]] == sorted(ranks[row["triage"]] for row in worklist[1:])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    overall = report["triage"]["overall"]
    assert overall["counts"] == {category: sum(row["triage"] == category for row in rows)
                                 for category in ("flagged", "indeterminate", "low")} | {"none": 0}
    experts = [figures for part, figures in report["calibration"].items() if part != "overall"]
    assert experts and all((figures["method"], figures["ece_before"], figures["ece_after"])
                           == ("temperature", 0.2, 0.04) for figures in experts)
    assert (tmp_path / "report" / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_mura_csv_input_gives_csv_study_ids_and_labels(mura_root: Path, tiny_repository: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "from_csv.csv"
    exit_code = score.main([str(mura_root / "valid_image_paths.csv"), "--out", str(out), "--models",
                            str(tiny_repository), "--no-progress"])
    assert exit_code == 0
    rows = _read_csv(out)
    assert len(rows) == NUM_STUDIES  # the CSV does not list the study added to the tree afterwards
    assert all(row["study"].startswith("MURA-v1.1/valid/XR_") for row in rows)
    labelled = [line.split(",") for line in (mura_root / "valid_labeled_studies.csv").read_text().split()]
    expected = {path.rstrip("/"): label for path, label in labelled}
    assert {row["study"]: row["true_label"] for row in rows} == expected


def test_views_of_several_studies_share_batches(mura_root: Path, tiny_repository: Path) -> None:
    batch_sizes: list[tuple[str, int]] = []

    def as_slow_as_a_real_router(model: str, size: int, seconds: float) -> None:
        # Runs inside the model call. A tiny router is idle between calls, and a study that finds its model
        # idle runs at once, alone (by design); a real one takes tens of ms, and studies queue up behind it.
        batch_sizes.append((model, size))
        if model == "router":
            time.sleep(0.05)

    settings = PipelineSettings(max_wait_ms=50.0, on_batch=as_slow_as_a_real_router)
    pipeline = Pipeline.load(tiny_repository, settings)
    studies = find_studies(mura_root / "valid")
    outcomes = []
    try:
        score_studies(pipeline, studies, outcomes.append, workers=4, decode_workers=2)
    finally:
        pipeline.close()
    assert sorted(outcome.study.study_id for outcome in outcomes) == [study.study_id for study in studies]
    largest_study = max(len(study.image_paths) for study in studies)
    router_batches = [size for model, size in batch_sizes if model == "router"]
    assert sum(router_batches) == sum(int(outcome.row["n_images"]) for outcome in outcomes)
    assert max(router_batches) > largest_study


def _copy_tree_with_many_studies(source: Path, target: Path, copies: int) -> int:
    """Copy the tree's studies `copies` times under new patient folders; return the study count."""
    count = 0
    for study in sorted(source.glob("XR_*/patient*/study*")):
        if not any(image.stat().st_size > 1000 for image in study.glob("*.png")):
            continue
        for copy_index in range(copies):
            destination = target / study.parent.parent.name / f"{study.parent.name}_{copy_index}" / study.name
            shutil.copytree(study, destination)
            count += 1
    return count


def test_resume_after_sigkill_leaves_no_study_missing_or_doubled(mura_root: Path, onnx_repository: Path,
                                                                 tmp_path: Path) -> None:
    # The ONNX repository: both score.py processes start without importing TensorFlow.
    tree = tmp_path / "tree"
    num_studies = _copy_tree_with_many_studies(mura_root / "valid", tree, copies=25)
    out = tmp_path / "predictions.csv"
    command = [sys.executable, str(REPOSITORY_ROOT / "score.py"), str(tree), "--out", str(out), "--models",
               str(onnx_repository), "--workers", "1", "--decode-workers", "1", "--no-progress"]
    environment = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 4:  # header + 3 rows
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows_after_kill = len(read_predictions(out))
    assert 3 <= rows_after_kill < num_studies, "the kill must land mid-run for this test to mean anything"
    with open(out, "a", encoding="utf-8") as handle:
        handle.write("XR_WRIST/patient_torn/study1_pos")  # a torn last write, as a crash can leave
    finished = subprocess.run(command, cwd=REPOSITORY_ROOT, env=environment, capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"{rows_after_kill} already in" in finished.stderr
    study_ids = [row["study"] for row in _read_csv(out)]
    assert len(study_ids) == len(set(study_ids)) == num_studies
    assert not any("torn" in study_id for study_id in study_ids)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{tmp}/missing", "--out", "{tmp}/out.csv"], "does not exist"),
        (["{tmp}/empty", "--out", "{tmp}/out.csv"], "no images found"),
        (["{tree}", "--out", "{tmp}/a_file/out.csv"], "a_file is a file, not a folder"),
        (["{tree}", "--out", "{tmp}/a_file/deeper/out.csv"], "a_file is a file, not a folder"),
        (["{tree}", "--out", "{tmp}/out.csv", "--models", "{tmp}/empty"], "do not load"),
        (["{tree}", "--out", "{tmp}/foreign.csv"], "columns"),
        (["{tree}", "--out", "{tmp}/out.csv", "--gpus-per-worker", "1"], "are for --engine ray"),
        (["{tree}", "--out", "{tmp}/out.csv", "--ray-address", "auto"], "are for --engine ray"),
    ],
)
def test_unusable_input_output_or_models_exit_non_zero_without_traceback(
    arguments: list[str], message: str, mura_root: Path, tiny_repository: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("a file, not a folder")
    (tmp_path / "foreign.csv").write_text("name,value\nx,1\n")
    filled = [argument.format(tmp=tmp_path, tree=mura_root / "valid") for argument in arguments]
    if "--models" not in filled:
        filled += ["--models", str(tiny_repository)]
    exit_code = score.main([*filled, "--no-progress"])
    error_output = capsys.readouterr().err
    assert exit_code == 2
    assert message in error_output and "Traceback" not in error_output


def test_an_unknown_aggregation_is_refused_by_the_parser_naming_the_choices(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        score.main([str(tmp_path), "--out", str(tmp_path / "out.csv"), "--aggregation", "median"])
    assert raised.value.code == 2
    error_output = capsys.readouterr().err
    assert "--aggregation: invalid choice: 'median'" in error_output and "mean" in error_output


def test_odd_file_names_and_a_fifo_do_not_stop_the_run(mura_root: Path, tiny_repository: Path,
                                                       tmp_path: Path, capsys) -> None:
    tree = tmp_path / "tree"
    good_png = sorted((mura_root / "valid").rglob("image1.png"))[0].read_bytes()
    odd_study = tree / os.fsdecode(b"study\xe9_latin1")  # a folder name that is not UTF-8
    later_study = tree / "zz_later_study"
    for folder in (odd_study, later_study):
        folder.mkdir(parents=True)
    (odd_study / os.fsdecode(b"view\xff.png")).write_bytes(good_png)
    (odd_study / "evil\u202egnp.png").write_bytes(good_png)
    os.mkfifo(odd_study / "pipe.png")  # a FIFO: reading it would block for ever
    (later_study / "image1.png").write_bytes(good_png)
    out = tmp_path / "out.csv"
    arguments = [str(tree), "--out", str(out), "--models", str(tiny_repository), "--no-progress",
                 "--worklist", "--report", str(tmp_path / "report")]
    assert score.main(arguments) == 0
    summary = next(line for line in capsys.readouterr().err.splitlines() if "score.py: scored" in line)
    assert re.search(r"scored 2 studies \(3 images, 0 unreadable\) in [\d.]+ s \(first result after [\d.]+ s\), "
                     r"[\d.]+ studies/s, [\d.]+ images/s", summary), summary
    rows = {row["study"]: row for row in _read_csv(out)}
    assert set(rows) == {"study\\xe9_latin1", "zz_later_study"}
    assert rows["study\\xe9_latin1"]["n_images"] == "2" and rows["study\\xe9_latin1"]["n_unreadable"] == "0"
    assert rows["zz_later_study"]["label"] in ("normal", "abnormal")
    text = out.read_text(encoding="utf-8") + (tmp_path / "out_worklist.csv").read_text(encoding="utf-8")
    assert "\u202e" not in text and "\udce9" not in text
    assert score.main(arguments) == 0  # a rerun finds both studies done under the same escaped ids
    assert "0 to score" in capsys.readouterr().err
