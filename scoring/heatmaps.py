"""score.py's heatmaps: overlay PNGs per view, the peaks file, and the pointing game against a findings CSV."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mura.findings import boxes_by_image, pointing_game, read_findings_csv
from scoring.output import AppendOnlyCsv

PEAK_COLUMNS = ("study", "image", "body_part", "peak_x", "peak_y", "width", "height", "method")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def peaks_path(out: Path) -> Path:
    """The peaks CSV beside the predictions: `<out stem>_peaks.csv`."""
    return out.with_name(f"{out.stem}_peaks.csv")


def open_peaks(out: Path) -> AppendOnlyCsv:
    """Open the peaks CSV for appending (a rerun resumes it like the predictions)."""
    peaks = AppendOnlyCsv(peaks_path(out), PEAK_COLUMNS)
    peaks.read_rows()  # drops a half-written last line, refuses foreign columns
    peaks.open_for_append()
    return peaks


def overlay_path(folder: Path, study_id: str, image_name: str) -> Path:
    """Where a view's overlay goes: DIR/<study id>/<image stem>_heatmap.png, names made file-system safe."""
    parts = [_UNSAFE.sub("_", part) for part in study_id.strip("/").split("/") if part not in ("", ".", "..")]
    return folder.joinpath(*parts, f"{_UNSAFE.sub('_', Path(image_name).stem)}_heatmap.png")


def find_findings_csv(input_path: Path) -> Path | None:
    """The findings CSV beside a data set: `<prefix>_findings.csv` for `<prefix>_image_paths.csv`, or for a
    split folder ROOT/<split> the file ROOT/<split>_findings.csv; None when there is none."""
    if input_path.suffix.lower() == ".csv":
        candidate = input_path.with_name(input_path.name.replace("_image_paths.csv", "_findings.csv"))
    else:
        candidate = input_path.parent / f"{input_path.name}_findings.csv"
    return candidate if candidate.is_file() and candidate != input_path else None


def _resolve(findings_csv: Path, image: str) -> Path:
    """An image path of the findings CSV as a file: relative to the CSV's folder or one of its parents."""
    path = Path(image)
    if path.is_absolute():
        return path.resolve()
    for base in (findings_csv.parent, *findings_csv.parent.parents):
        if (base / path).exists():
            return (base / path).resolve()
    return (findings_csv.parent / path).resolve()


def score_pointing_game(findings_csv: Path, peak_rows: list[dict[str, str]],
                        image_paths: dict[tuple[str, str], Path]) -> dict:
    """Pointing game of the peaks against the findings; image_paths maps (study, image name) to its file."""
    grouped = boxes_by_image(read_findings_csv(findings_csv))
    boxes = {_resolve(findings_csv, image): found for image, found in grouped.items()}
    views = []
    for row in peak_rows:
        path = image_paths.get((row["study"], row["image"]))
        found = boxes.get(path.resolve()) if path is not None else None
        if found:
            views.append((row["body_part"], (int(row["peak_x"]), int(row["peak_y"])),
                          (int(row["width"]), int(row["height"])), found))
    return {"findings_csv": findings_csv.name, "margin": 0.05, "per_body_part": pointing_game(views)}


def write_pointing_report(folder: Path, result: dict) -> None:
    """Write pointing_game.json and append its table to report.md in the report folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pointing_game.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["", "## Pointing game (heatmap peaks)", "",
             f"Is the heatmap's peak inside a finding's box of `{result['findings_csv']}`, enlarged by 5 % of the "
             "image side on each edge? Abnormal views with a recorded finding only, body part as routed.", "",
             "| body part | views | hits | hit rate |", "| --- | ---: | ---: | ---: |"]
    for part, counts in result["per_body_part"].items():
        lines.append(f"| {part} | {counts['views']} | {counts['hits']} | {counts['hit_rate']:.3f} |")
    with open(folder / "report.md", "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
