"""scoring.output: resumable CSV outputs survive a torn last line and duplicate rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scoring.output import PREDICTION_COLUMNS, OutputError, open_outputs, read_predictions


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_open_outputs_drops_torn_line_and_duplicate_rows(tmp_path: Path) -> None:
    out, errors = tmp_path / "out.csv", tmp_path / "out_errors.csv"
    header = ",".join(PREDICTION_COLUMNS)
    row_a = "a,1,0,XR_HAND,0.9,0.7,abnormal,0.5,,XR_HAND,1,0,flagged"
    row_b = "b,1,0,XR_HAND,0.9,0.2,normal,0.5,,XR_HAND,0,0,"
    out.write_text(f"{header}\n{row_a}\n{row_b}\n{row_a}\nc,1,0,XR_HA")
    errors.write_text("study,image,error,message\na,x.png,UnreadableImage,m\nc,y.png,UnreadableImage,m\n")
    predictions, error_file, done = open_outputs(out, errors)
    predictions.close()
    error_file.close()
    assert done == {"a", "b"}
    assert out.read_text() == f"{header}\n{row_a}\n{row_b}\n"
    assert [row["study"] for row in _read_csv(errors)] == ["a"]  # c is scored again, its error too


def test_a_predictions_file_of_the_previous_release_is_upgraded_and_resumed(tmp_path: Path) -> None:
    out, errors = tmp_path / "out.csv", tmp_path / "out_errors.csv"
    previous = [column for column in PREDICTION_COLUMNS if column != "triage"]
    out.write_text(",".join(previous) + "\na,1,0,XR_HAND,0.9,0.7,abnormal,0.5,,XR_HAND,1,0\n")
    predictions, error_file, done = open_outputs(out, errors)
    predictions.append({"study": "b", "label": "normal", "triage": "low"})
    predictions.close()
    error_file.close()
    rows = _read_csv(out)
    assert done == {"a"} and tuple(rows[0]) == PREDICTION_COLUMNS
    assert [(row["study"], row["abnormality"], row["triage"]) for row in rows] == [("a", "0.7", ""), ("b", "", "low")]
    assert read_predictions(out) == rows


def test_a_previous_header_read_for_the_report_is_not_rewritten(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    text = ",".join(PREDICTION_COLUMNS[:-1]) + "\na,1,0,XR_HAND,0.9,0.7,abnormal,0.5,,XR_HAND,1,0\n"
    out.write_text(text)
    assert read_predictions(out)[0]["triage"] == "" and out.read_text() == text


def test_a_foreign_header_is_still_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("study,abnormality,triage\na,0.7,low\n")
    with pytest.raises(OutputError, match="not those of score.py"):
        open_outputs(out, tmp_path / "out_errors.csv")
