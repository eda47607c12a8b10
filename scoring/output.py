"""Resumable CSV files of `score.py`: one predictions row per study, one errors row per bad image.

Rows are appended and flushed one at a time, so a kill loses at most the row being written. On a
rerun, `PredictionsFile.open` drops a half-written last line (anything after the last newline) and
any duplicate study rows, and returns the ids already scored so they are skipped. A predictions file of an
earlier release (fewer columns, see EARLIER_PREDICTION_COLUMNS) is upgraded in place: its rows are kept, the new
columns empty.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from classifiers.names import printable_name

PREDICTION_COLUMNS = (
    "study", "n_images", "n_unreadable", "body_part", "body_part_confidence", "abnormality",
    "label", "threshold", "warnings", "true_body_part", "true_label", "n_out_of_distribution", "triage",
)
# Headers earlier releases wrote, newest first: read as they are, the missing columns empty.
EARLIER_PREDICTION_COLUMNS = (PREDICTION_COLUMNS[:-1], PREDICTION_COLUMNS[:-2])
ERROR_COLUMNS = ("study", "image", "error", "message")


class OutputError(Exception):
    """An output file cannot be written or is not one of ours; the message says what to do."""


def _one_line(value: object) -> str:
    """Return the value as text on one line with hidden characters escaped (see printable_name).

    One line, so every CSV record is exactly one line; escaped, so a file name that is not UTF-8 can be
    written and a bidirectional override cannot reorder what a reader sees.
    """
    return printable_name(" ".join(str(value).split())) if value is not None else ""


def _format_line(values: Iterable[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_one_line(value) for value in values])
    return buffer.getvalue()


class AppendOnlyCsv:
    """A CSV file with a fixed header, opened for appending whole lines, each flushed at once."""

    def __init__(self, path: Path, columns: tuple[str, ...],
                 earlier_columns: tuple[tuple[str, ...], ...] = ()) -> None:
        self.path = path
        self.columns = columns
        self.earlier_columns = earlier_columns  # headers of earlier releases that read_rows accepts
        self.needs_upgrade = False  # read_rows found an earlier header: rewrite() before appending
        self._handle = None

    def read_rows(self) -> list[dict[str, str]]:
        """Return the complete rows already in the file, after removing a half-written last line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        _truncate_partial_last_line(self.path)
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return []
            columns = tuple(header)
            if columns != self.columns and columns not in self.earlier_columns:
                raise OutputError(
                    f"{self.path} exists but its columns are {header[:4]}..., not those of score.py; "
                    "choose another output path or delete the file"
                )
            self.needs_upgrade = columns != self.columns
            missing = dict.fromkeys(self.columns, "")
            return [missing | dict(zip(columns, row, strict=True)) for row in reader if len(row) == len(columns)]

    def rewrite(self, rows: list[dict[str, str]]) -> None:
        """Replace the file's content by the header and `rows` (atomically, via a temporary file)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(_format_line(self.columns))
            for row in rows:
                handle.write(_format_line(row.get(column, "") for column in self.columns))
        os.replace(temporary, self.path)
        self.needs_upgrade = False

    def open_for_append(self) -> None:
        """Open the file for appending, writing the header if the file is new or empty."""
        if self.needs_upgrade:
            raise RuntimeError(f"{self.path} has an earlier release's columns; rewrite() it before appending")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8", newline="")
        except OSError as error:
            raise OutputError(f"cannot write {self.path} ({describe_write_failure(self.path, error)}); "
                              "choose a writable output path") from None
        if self._handle.tell() == 0:
            self.append({column: column for column in self.columns})

    def append(self, row: dict[str, object]) -> None:
        """Write one row as one line and flush it to the operating system."""
        if self._handle is None:
            raise RuntimeError(f"{self.path} is not open; call open_for_append() first")
        self._handle.write(_format_line(row.get(column, "") for column in self.columns))
        self._handle.flush()

    def close(self) -> None:
        """Flush to disk and close."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


def describe_write_failure(path: Path, error: OSError) -> str:
    """Say why `path` cannot be written, naming a parent that is a file rather than a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    return str(error.strerror or error)


def _truncate_partial_last_line(path: Path) -> None:
    """Cut the file after its last newline: a killed writer may have left half a line."""
    with open(path, "rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        position = size
        while position > 0:
            step = min(65536, position)
            handle.seek(position - step)
            chunk = handle.read(step)
            newline_at = chunk.rfind(b"\n")
            if newline_at >= 0:
                end = position - step + newline_at + 1
                if end != size:
                    handle.truncate(end)
                return
            position -= step
        handle.truncate(0)


def open_outputs(predictions_path: Path, errors_path: Path) -> tuple[AppendOnlyCsv, AppendOnlyCsv, set[str]]:
    """Open both files for a (re)run and return them with the study ids already scored.

    Duplicate study rows are dropped (first kept) and error rows of studies without a predictions
    row are removed, because those studies are scored again and would report their errors twice. A predictions
    file with an earlier release's header is rewritten with today's (its rows kept, new columns empty).

    Raises:
        OutputError: a file cannot be written or has foreign columns.
    """
    predictions = AppendOnlyCsv(predictions_path, PREDICTION_COLUMNS, EARLIER_PREDICTION_COLUMNS)
    errors = AppendOnlyCsv(errors_path, ERROR_COLUMNS)
    try:
        rows = predictions.read_rows()
        error_rows = errors.read_rows()
    except OSError as error:
        raise OutputError(f"cannot read {error.filename} ({error.strerror}); check the output path") from None
    unique_rows: dict[str, dict[str, str]] = {}
    for row in rows:
        unique_rows.setdefault(row["study"], row)
    done = set(unique_rows)
    if predictions_path.exists() and (len(unique_rows) != len(rows) or predictions.needs_upgrade):
        predictions.rewrite(list(unique_rows.values()))
    kept_errors = [row for row in error_rows if row["study"] in done]
    if errors_path.exists() and len(kept_errors) != len(error_rows):
        errors.rewrite(kept_errors)
    predictions.open_for_append()
    errors.open_for_append()
    return predictions, errors, done


def read_predictions(path: Path) -> list[dict[str, str]]:
    """Return the complete rows of a predictions CSV written by score.py."""
    return AppendOnlyCsv(path, PREDICTION_COLUMNS, EARLIER_PREDICTION_COLUMNS).read_rows()
