"""scoring.output: resumable CSV outputs survive a torn last line and duplicate rows."""

from __future__ import annotations

import csv
from pathlib import Path

from scoring.output import PREDICTION_COLUMNS, open_outputs


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_open_outputs_drops_torn_line_and_duplicate_rows(tmp_path: Path) -> None:
    out, errors = tmp_path / "out.csv", tmp_path / "out_errors.csv"
    header = ",".join(PREDICTION_COLUMNS)
    row_a = "a,1,0,XR_HAND,0.9,0.7,abnormal,0.5,,XR_HAND,1,0"
    row_b = "b,1,0,XR_HAND,0.9,0.2,normal,0.5,,XR_HAND,0,0"
    out.write_text(f"{header}\n{row_a}\n{row_b}\n{row_a}\nc,1,0,XR_HA")
    errors.write_text("study,image,error,message\na,x.png,UnreadableImage,m\nc,y.png,UnreadableImage,m\n")
    predictions, error_file, done = open_outputs(out, errors)
    predictions.close()
    error_file.close()
    assert done == {"a", "b"}
    assert out.read_text() == f"{header}\n{row_a}\n{row_b}\n"
    assert [row["study"] for row in _read_csv(errors)] == ["a"]  # c is scored again, its error too
