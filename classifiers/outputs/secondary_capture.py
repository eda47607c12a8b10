"""A view's heatmap overlay as a DICOM Secondary Capture in the same study (a new series), made with highdicom.

PACS viewers show it beside the radiograph; it references the view it was drawn over. Patient and study
attributes come from that view's header through classifiers.outputs.dicom_attributes (only values valid for their VR),
nothing else. General Series Laterality (Type 2C: the upper limb is paired) is the view's, or empty.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import highdicom
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from classifiers.outputs.dicom_attributes import writable_source
from classifiers.outputs.structured_report import MANUFACTURER, structured_report_bytes
from classifiers.outputs.writer_errors import typed_writer_errors

SERIES_NUMBER = 9002
SERIES_DESCRIPTION = "Triage heatmap (where the model looked)"


@typed_writer_errors("DICOM Secondary Capture")
def build_heatmap_captures(source_headers: Sequence[Dataset], overlays_png: Sequence[bytes],
                           series_instance_uid: str | None = None) -> list[Dataset]:
    """One RGB Secondary Capture per view's overlay PNG, all in one new series of the views' study."""
    if len(source_headers) != len(overlays_png) or not source_headers:
        raise ValueError(f"{len(overlays_png)} overlays for {len(source_headers)} views; need one per view")
    series_uid = series_instance_uid or highdicom.UID()
    return [_capture(header, png, series_uid, number) for number, (header, png)
            in enumerate(zip(source_headers, overlays_png, strict=True), start=1)]


def capture_bytes(capture: Dataset) -> bytes:
    """The Secondary Capture as a DICOM Part 10 file."""
    return structured_report_bytes(capture)


def _capture(header: Dataset, overlay_png: bytes, series_uid: str, instance_number: int) -> Dataset:
    """The Secondary Capture of one overlay, referencing the view it was drawn over."""
    source = writable_source(header).dataset
    pixels = np.asarray(Image.open(io.BytesIO(overlay_png)).convert("RGB"))  # (rows, columns, 3) uint8
    capture = highdicom.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=SERIES_NUMBER,
        sop_instance_uid=highdicom.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source), laterality=_laterality(source))
    if "Laterality" not in capture:
        capture.Laterality = ""  # Type 2C, present and empty: the view did not say which side
    capture.SeriesDescription = SERIES_DESCRIPTION
    capture.DerivationDescription = "heatmap of the abnormality model's evidence laid over the view"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    return capture


def _laterality(source: Dataset) -> str | None:
    """R or L from the view's Image Laterality or series Laterality; None when neither says."""
    value = source.get("ImageLaterality") or source.get("Laterality")
    return value if value in ("R", "L") else None


def _orientation(header: Dataset) -> tuple[str, str]:
    """The view's Patient Orientation (row, column directions), or anterior/foot when it has none we can write."""
    orientation = header.get("PatientOrientation")
    if orientation and len(orientation) == 2 and all(orientation) and all(
            str(direction) in ("A", "P", "R", "L", "H", "F") for direction in orientation):  # what highdicom takes
        return str(orientation[0]), str(orientation[1])
    return ("A", "F")
