"""The one builder of every DICOM object the service writes for a study: the SR and, when explained, per view a
heatmap Secondary Capture and a Grayscale Softcopy Presentation State.

The HTTP answer (Accept application/dicom and the multipart DICOM answer), `score.py --sr` and the PACS worker
call `build_dicom_outputs`; it reads the source headers the result keeps beside its views
(`StudyResult.source_headers`, one per view) through the one copying policy of classifiers.outputs.dicom_attributes.
A view whose capture or presentation state cannot be written costs that object, named in a warning, never the
study; the warnings name attributes and exception types only, never a header value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import highdicom
from pydicom.dataset import Dataset

from classifiers.errors import MalformedDicom
from classifiers.outputs.dicom_attributes import UnwritableIdentifier, left_out_warning, writable_source
from classifiers.outputs.presentation_state import build_presentation_state
from classifiers.outputs.secondary_capture import build_heatmap_captures
from classifiers.outputs.structured_report import SERIES_NUMBER, build_structured_report, structured_report_bytes
from classifiers.results import StudyResult


@dataclass(frozen=True)
class DicomOutputs:
    """The objects written for one study, and the warnings of their writing (already inside the SR)."""

    report: Dataset
    captures: list[Dataset] = field(default_factory=list)
    presentation_states: list[Dataset] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def instances(self) -> list[Dataset]:
        """Every object, the SR first, then the captures, then the presentation states."""
        return [self.report, *self.captures, *self.presentation_states]

    def instances_bytes(self) -> list[bytes]:
        """Every object as a DICOM Part 10 file, in the order of `instances`."""
        return [structured_report_bytes(instance) for instance in self.instances()]


def build_dicom_outputs(result: StudyResult, *, explained: bool = True, backend: str | None = None,
                        previous_versions: Sequence[Dataset] = (), instance_number: int = 1,
                        series_instance_uid: str | None = None, series_number: int = SERIES_NUMBER) -> DicomOutputs:
    """Build the SR of a DICOM study's result and, with `explained` and explanations, its captures and GSPSs.

    Args:
        result: the pipeline's result; `result.source_headers` holds one header per view.
        explained: whether to write the heatmap objects (the caller's answer can carry them).
        backend: the backend that scored, recorded among the algorithm's parameters.
        previous_versions, instance_number, series_instance_uid, series_number: of the SR (see
            classifiers.outputs.structured_report.build_structured_report).

    Raises:
        ValueError: the result has no DICOM source header (a PNG or JPEG study).
        MalformedDicom: a source's SOP Class, SOP Instance, Study or Series Instance UID is not a valid UID.
    """
    headers = list(result.source_headers)
    if not headers or len(headers) != len(result.images):
        raise ValueError("DICOM outputs need every view to be DICOM; PNG and JPEG studies have no source header")
    warnings = _check_sources(result, headers)
    written = _with_warnings(result, warnings)
    report = build_structured_report(headers, written, previous_versions=previous_versions,
                                     series_instance_uid=series_instance_uid, series_number=series_number,
                                     instance_number=instance_number, backend=backend)
    if not explained:
        return DicomOutputs(report, warnings=warnings)
    captures, states, view_warnings = _heatmap_objects(written, headers)
    return DicomOutputs(report, captures, states, [*warnings, *view_warnings])


def _check_sources(result: StudyResult, headers: Sequence[Dataset]) -> list[str]:
    """The warning naming attributes the writers leave out; a typed error when a UID cannot be written."""
    left_out: list[str] = []
    for view, header in zip(result.images, headers, strict=True):
        try:
            left_out.extend(writable_source(header).left_out)
        except UnwritableIdentifier as error:
            raise MalformedDicom(view.name, f"{error}, so no DICOM object can be written in its study; fix the"
                                            " header or accept application/json") from None
    warning = left_out_warning(left_out)
    return [warning] if warning else []


def _with_warnings(result: StudyResult, warnings: Sequence[str]) -> StudyResult:
    """The result with the writers' warnings added to its own (a copy: the caller's result is not changed)."""
    added = [warning for warning in warnings if warning not in result.warnings]
    return replace(result, warnings=[*result.warnings, *added], source_headers=result.source_headers)


def _heatmap_objects(result: StudyResult, headers: Sequence[Dataset]) -> tuple[list[Dataset], list[Dataset], list[str]]:
    """Per explained view, its Secondary Capture and presentation state; a view that fails costs only its objects."""
    capture_series, state_series = highdicom.UID(), highdicom.UID()
    captures: list[Dataset] = []
    states: list[Dataset] = []
    warnings: list[str] = []
    for number, (view, header) in enumerate(zip(result.images, headers, strict=True), start=1):
        if view.explanation is None:
            continue
        try:
            [capture] = build_heatmap_captures([header], [view.explanation.heatmap_png], capture_series)
            capture.InstanceNumber = len(captures) + 1
            captures.append(capture)
            states.append(build_presentation_state(header, view, result, state_series, len(states) + 1))
        except Exception as error:  # a library's text can quote a header value: only its type is kept
            warnings.append(f"view {number}: heatmap DICOM objects not written ({type(error).__name__})")
    return captures, states, warnings


def scoring_backend(pipeline: object, result: StudyResult) -> str | None:
    """The backend that ran the result's expert (e.g. "onnx" under `auto`), for the algorithm's parameters."""
    models = getattr(pipeline, "models", {})
    loaded = models.get(result.body_part) if isinstance(models, dict) else None
    runner = getattr(loaded, "runner", None)
    return getattr(runner, "backend", None) or getattr(getattr(pipeline, "backend", None), "name", None)
