"""A view's heatmap peak as a Grayscale Softcopy Presentation State (highdicom `pr`), in the view's study.

The non-destructive form of an annotated copy: a viewer shows the original radiograph with, on a graphic layer,
a circle around the peak of the expert's heatmap and the view's and study's scores as text. Coordinates are
PIXEL units of the referenced image (the view's frame for a multi-frame instance); the VOI window and Rescale
of the source, when valid, are kept so the image looks as it did; MONOCHROME1 gets the INVERSE presentation LUT.
"""

from __future__ import annotations

import highdicom
import numpy as np
from highdicom import pr
from pydicom.dataset import Dataset

from classifiers.outputs.dicom_attributes import referable_frames, writable_source
from classifiers.outputs.structured_report import ALGORITHM_NAME, MANUFACTURER, software_versions
from classifiers.results import StudyResult, ViewResult

SERIES_NUMBER = 9003
SERIES_DESCRIPTION = "Triage heatmap peak (presentation state)"
CONTENT_LABEL = "TRIAGE PEAK"  # CS, at most 16 characters
LAYER = "TRIAGE"
RING_RADIUS_FRACTION = 0.025  # of the long side, as on the PNG overlay (classifiers.explain.overlay)


def build_presentation_state(header: Dataset, view: ViewResult, result: StudyResult, series_instance_uid: str,
                             instance_number: int) -> Dataset:
    """The GSPS of one explained view: a ring at its heatmap peak and its score, over the original image.

    Raises:
        ValueError: the view has no explanation.
    """
    if view.explanation is None:
        raise ValueError("a presentation state needs the view's explanation; predict with explain=true")
    source = writable_source(header).dataset
    frames = referable_frames(source, [view.dicom.frame] if view.dicom is not None else [])
    layer = pr.GraphicLayer(layer_name=LAYER, order=1, description="radiograph triage heatmap peak")
    annotation = pr.GraphicAnnotation(
        referenced_images=[source], graphic_layer=layer, referenced_frame_number=frames,
        graphic_objects=[_ring(source, view.explanation.peak)],
        text_objects=[pr.TextObject(text_value=_score_text(view, result), units=pr.AnnotationUnitsValues.PIXEL,
                                    anchor_point=_pixel_centre(view.explanation.peak), anchor_point_visible=False)])
    inverse = source.get("PhotometricInterpretation") == "MONOCHROME1"
    shape = highdicom.PresentationLUTShapeValues.INVERSE if inverse else highdicom.PresentationLUTShapeValues.IDENTITY
    reference = _with_functional_groups(source) if frames else source
    state = pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[reference], series_instance_uid=series_instance_uid, series_number=SERIES_NUMBER,
        sop_instance_uid=highdicom.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=ALGORITHM_NAME, software_versions=tuple(software_versions(result)),
        device_serial_number=None, content_label=CONTENT_LABEL,
        content_description="where the abnormality model looked", graphic_annotations=[annotation],
        graphic_layers=[layer],
        presentation_lut_transformation=highdicom.PresentationLUTTransformation(presentation_lut_shape=shape))
    state.SeriesDescription = SERIES_DESCRIPTION
    state.Laterality = _laterality(source)  # General Series, Type 2C (the upper limb is paired): empty if unknown
    return state


def _with_functional_groups(source: Dataset) -> Dataset:
    """A multi-frame source whose top-level Rescale and window are also written as shared functional groups.

    highdicom reads a multi-frame image's Modality and VOI LUT from its functional groups only; a multi-frame
    Secondary Capture holds them (if at all) at the top level.
    """
    if "SharedFunctionalGroupsSequence" in source:
        return source
    shared = Dataset()
    if "RescaleSlope" in source and "RescaleIntercept" in source:
        transformation = Dataset()
        transformation.RescaleSlope, transformation.RescaleIntercept = source.RescaleSlope, source.RescaleIntercept
        transformation.RescaleType = source.get("RescaleType") or "US"
        shared.PixelValueTransformationSequence = [transformation]
    if "WindowCenter" in source and "WindowWidth" in source:
        window = Dataset()
        window.WindowCenter, window.WindowWidth = source.WindowCenter, source.WindowWidth
        shared.FrameVOILUTSequence = [window]
    completed = Dataset(source)
    completed.file_meta = source.file_meta
    completed.SharedFunctionalGroupsSequence = [shared]
    completed.PerFrameFunctionalGroupsSequence = [Dataset() for _ in range(int(source.NumberOfFrames))]
    return completed


def _laterality(source: Dataset) -> str:
    """R or L from the view's Image Laterality or series Laterality; empty when neither says."""
    value = source.get("ImageLaterality") or source.get("Laterality")
    return value if value in ("R", "L") else ""


def _ring(source: Dataset, peak: tuple[int, int]) -> pr.GraphicObject:
    """A CIRCLE (centre, then a point on the circle) around the peak, in PIXEL units."""
    centre = _pixel_centre(peak)
    columns = int(source.Columns)
    radius = min(max(4.0, RING_RADIUS_FRACTION * max(int(source.Rows), columns)), columns / 2)
    # The point on the circle lies inside the image (PIXEL coordinates must): right of the centre, or left of it.
    edge = centre[0] + radius if centre[0] + radius <= columns else centre[0] - radius
    data = np.array([centre, (max(0.0, edge), centre[1])], dtype=np.float64)
    return pr.GraphicObject(graphic_type=pr.GraphicTypeValues.CIRCLE, graphic_data=data,
                            units=pr.AnnotationUnitsValues.PIXEL)


def _pixel_centre(peak: tuple[int, int]) -> tuple[float, float]:
    """The centre of pixel (x, y) (0-based) in PIXEL units, where the top-left pixel spans 0.0 to 1.0."""
    return float(peak[0]) + 0.5, float(peak[1]) + 0.5


def _score_text(view: ViewResult, result: StudyResult) -> str:
    """The text beside the peak: the view's probability, then the study's with its label and threshold."""
    return (f"P(abnormal) view {view.abnormality:.2f}; study {result.abnormality:.2f} {result.label}"
            f" (threshold {result.threshold:.2f})")
