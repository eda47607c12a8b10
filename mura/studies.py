"""Find the studies to score or train on: a MURA tree, any leaf-folder tree, or a CSV of image paths.

A study is one folder of views. Three sources are understood:

- a MURA-layout folder (`XR_WRIST/patient00011/study1_positive/image1.png`): the `XR_<PART>` folder
  gives the body part, a `*_positive` / `*_negative` study folder gives the label;
- any folder whose leaf folders hold images: each leaf folder is a study, labels and parts unknown
  unless the folder names follow the MURA convention;
- a CSV whose first column is image paths (MURA's `*_image_paths.csv`, no header needed). Relative
  paths are resolved against the first of: the CSV's folder, each of its parent folders, the working
  directory, where the first listed image exists. MURA writes `MURA-v1.1/valid/...`, relative to the
  folder that holds `MURA-v1.1/`, so that case resolves to the CSV folder's parent. Labels come from a
  `*_labeled_studies.csv` beside it (`<prefix>_image_paths.csv` -> `<prefix>_labeled_studies.csv`)
  when present, else from the study folder names.

Study ids are stable across runs: the study folder path relative to the input folder, or for a CSV the
folder part of the path exactly as the CSV writes it (MURA's own study identifier), in POSIX form.

DICOM files (recognised by content) are grouped by their StudyInstanceUID instead of their folder: one
study's files spread over folders are one study, a folder holding two studies is two. Such a study's id is
its StudyInstanceUID; its body part and label come from its folders when they all agree. A DICOM file
whose header cannot be read stays in its folder's study, where decoding reports it.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import pydicom

from classifiers.body_parts import BODY_PARTS
from classifiers.decoding.dicom import is_dicom
from classifiers.names import printable_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
DICOM_PROBE_BYTES = 132  # preamble + "DICM"
_LABEL_PATTERN = re.compile(r"_(positive|negative)$", re.IGNORECASE)


@dataclass(frozen=True)
class Study:
    """One study: its stable id, its views in name order, and what is known about it."""

    study_id: str
    image_paths: tuple[Path, ...]
    body_part: str | None
    label: int | None  # 1 abnormal, 0 normal, None unknown


class StudySourceError(ValueError):
    """The input names no studies we can read; the message says what was expected."""


def find_studies(source: str | Path) -> list[Study]:
    """Return the studies under a folder or listed in a CSV, sorted by study id.

    Raises:
        StudySourceError: the source is missing, empty, or a CSV whose paths cannot be resolved.
    """
    source_path = Path(source)
    if not source_path.exists():
        raise StudySourceError(
            f"input {str(source)!r} does not exist; give a folder of studies "
            "(MURA layout or one folder per study) or a CSV of image paths"
        )
    if source_path.is_dir():
        studies = _studies_from_folder(source_path)
    elif source_path.suffix.lower() == ".csv":
        studies = _studies_from_csv(source_path)
    else:
        raise StudySourceError(
            f"input {str(source)!r} is neither a folder nor a .csv file of image paths"
        )
    studies = group_dicom_by_study(studies)
    if not studies:
        raise StudySourceError(
            f"no images found in {str(source)!r}; expected image files ({', '.join(IMAGE_SUFFIXES)}) "
            "inside study folders, e.g. XR_WRIST/patient00011/study1_positive/image1.png"
        )
    return studies


def group_dicom_by_study(studies: Iterable[Study]) -> list[Study]:
    """Regroup DICOM files by StudyInstanceUID (see the module docstring); other files keep their study."""
    kept: list[Study] = []
    by_uid: dict[str, list[tuple[Path, Study]]] = {}
    for study in studies:
        others = []
        for image_path in study.image_paths:
            uid = dicom_study_uid(image_path)
            if uid is None:
                others.append(image_path)
            else:
                by_uid.setdefault(uid, []).append((image_path, study))
        if others:
            kept.append(replace(study, image_paths=tuple(others)))
    for uid, members in by_uid.items():
        parts = {study.body_part for _path, study in members}
        labels = {study.label for _path, study in members}
        kept.append(Study(study_id=printable_name(uid), image_paths=tuple(sorted(path for path, _study in members)),
                          body_part=parts.pop() if len(parts) == 1 else None,
                          label=labels.pop() if len(labels) == 1 else None))
    return sorted(kept, key=lambda study: study.study_id)


def dicom_study_uid(path: Path) -> str | None:
    """The StudyInstanceUID of a DICOM file (read up to the pixel data); None for other or unreadable files."""
    try:
        with open(path, "rb") as handle:
            if not is_dicom(handle.read(DICOM_PROBE_BYTES)):
                return None
            handle.seek(0)
            header = pydicom.dcmread(handle, force=True, stop_before_pixels=True)
            return str(header.StudyInstanceUID).strip() or None
    except Exception:  # noqa: BLE001 - an unreadable header leaves the file in its folder's study
        return None


def body_part_from_path(parts: Iterable[str]) -> str | None:
    """Return the body part named by an `XR_<PART>` path component, or None if there is none."""
    for part in parts:
        if part.upper() in BODY_PARTS:
            return part.upper()
    return None


def label_from_folder_name(folder_name: str) -> int | None:
    """Return 1 for `*_positive`, 0 for `*_negative`, None for any other folder name."""
    match = _LABEL_PATTERN.search(folder_name)
    if match is None:
        return None
    return 1 if match.group(1).lower() == "positive" else 0


def _is_image(path: Path) -> bool:
    """An image file by its suffix, not hidden, and a regular file (a FIFO or device would block a read).

    DICOM files named without an image suffix, as PACS exports write them (`IM000001`, or a UID such as
    `1.2.840.1.5`), are recognised by content.
    """
    if path.name.startswith(".") or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    return (suffix == "" or suffix[1:].isdigit()) and _starts_like_dicom(path)


def _starts_like_dicom(path: Path) -> bool:
    """True when the file's first bytes are DICOM's (see `classifiers.decoding.dicom.is_dicom`)."""
    try:
        with open(path, "rb") as handle:
            return is_dicom(handle.read(DICOM_PROBE_BYTES))
    except OSError:
        return False


def _studies_from_folder(root: Path) -> list[Study]:
    """Group the images under `root` by the folder that holds them; each such folder is a study."""
    images_by_folder: dict[Path, list[Path]] = {}
    for folder, _subfolders, file_names in os.walk(root):
        for file_name in file_names:
            image_path = Path(folder) / file_name
            if _is_image(image_path):
                images_by_folder.setdefault(Path(folder), []).append(image_path)
    studies = []
    for folder, image_paths in images_by_folder.items():
        relative = folder.relative_to(root)
        # The input folder itself holding images is one study, named after the folder.
        relative_parts = relative.parts or (root.resolve().name,)
        studies.append(
            Study(
                # Folder names that are not UTF-8 or hold hidden characters are escaped once, here, so
                # the id is the same in every output and on every rerun.
                study_id=printable_name("/".join(relative_parts)),
                image_paths=tuple(sorted(image_paths)),
                body_part=body_part_from_path(relative_parts),
                label=label_from_folder_name(relative_parts[-1]),
            )
        )
    return sorted(studies, key=lambda study: study.study_id)


def _read_path_column(csv_path: Path) -> list[str]:
    """Return the first column of a CSV of image paths, skipping blank rows and a header row."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and row[0].strip()]
    paths = [row[0].strip() for row in rows]
    if paths and not paths[0].lower().endswith(IMAGE_SUFFIXES):
        paths = paths[1:]  # a header such as "path" or "image"
    return paths


def _resolve_base(csv_path: Path, written_paths: list[str]) -> Path:
    """Return the folder that the CSV's relative paths are relative to (see the module docstring)."""
    csv_folder = csv_path.resolve().parent
    candidates = [csv_folder, *csv_folder.parents, Path.cwd()]
    probes = [path for path in written_paths if not Path(path).is_absolute()][:5]
    if not probes:
        return csv_folder
    for base in candidates:
        if any((base / probe).is_file() for probe in probes):
            return base
    raise StudySourceError(
        f"cannot find {probes[0]!r} (listed in {csv_path}) relative to {csv_folder}, any folder "
        "above it, or the working directory; put the CSV beside the data set folder or use "
        "absolute paths"
    )


def _read_labeled_studies(csv_path: Path) -> dict[str, int]:
    """Return {study folder as written: label} from the `*_labeled_studies.csv` beside the CSV."""
    name = csv_path.name
    if not name.endswith("_image_paths.csv"):
        return {}
    labels_path = csv_path.with_name(name[: -len("_image_paths.csv")] + "_labeled_studies.csv")
    if not labels_path.is_file():
        return {}
    labels: dict[str, int] = {}
    with open(labels_path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or row[1].strip() not in ("0", "1"):
                continue  # blank line or header
            labels[_normalise_folder(row[0])] = int(row[1].strip())
    return labels


def _normalise_folder(written: str) -> str:
    """Return a written folder path in POSIX form without a trailing slash."""
    return str(PurePosixPath(written.strip().replace("\\", "/")))


def _studies_from_csv(csv_path: Path) -> list[Study]:
    """Group the CSV's image paths by study folder; labels from the labeled-studies CSV if any."""
    written_paths = _read_path_column(csv_path)
    if not written_paths:
        return []
    base = _resolve_base(csv_path, written_paths)
    labels = _read_labeled_studies(csv_path)
    images_by_study: dict[str, list[Path]] = {}
    for written in written_paths:
        study_id = _normalise_folder(str(PurePosixPath(written.replace("\\", "/")).parent))
        images_by_study.setdefault(study_id, []).append(base / written)
    studies = []
    for study_id, image_paths in images_by_study.items():
        parts = PurePosixPath(study_id).parts
        label = labels.get(study_id, label_from_folder_name(parts[-1] if parts else ""))
        studies.append(
            Study(
                study_id=study_id,
                image_paths=tuple(sorted(image_paths)),
                body_part=body_part_from_path(parts),
                label=label,
            )
        )
    return sorted(studies, key=lambda study: study.study_id)
