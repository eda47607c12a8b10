"""marshmallow schemas: they validate every request field and describe every response (OpenAPI)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from classifiers.backends.registry import BACKEND_CHOICES
from classifiers.body_parts import BODY_PARTS, normalize_body_part
from classifiers.errors import InvalidOption
from classifiers.repository.entries import TRIAGE_CATEGORIES
from classifiers.study_policy import AGGREGATIONS

PROBABILITY = validate.Range(min=0.0, max=1.0)


class BodyPartField(fields.String):
    """A body part written XR_WRIST, wrist or Wrist; loads as XR_WRIST."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        try:
            return normalize_body_part(super()._deserialize(value, attr, data, **kwargs))
        except InvalidOption as error:
            raise ValidationError(str(error)) from None


class PredictOptionsSchema(Schema):
    """Optional study options: form fields, JSON keys or query arguments."""

    body_part = BodyPartField(
        metadata={"enum": list(BODY_PARTS),
                  "description": "Skip routing and send every view to this body part's expert "
                                 "(XR_WRIST, wrist and Wrist are the same)."},
    )
    aggregation = fields.String(
        validate=validate.OneOf(list(AGGREGATIONS), error="unknown aggregation {input!r}; valid: {choices}"),
        metadata={"description": "How view abnormalities become the study's: mean (default) or max."},
    )
    explain = fields.Boolean(
        metadata={"description": "true: add a heatmap of the expert to every view (images[].explanation). "
                                 "Costs about one more expert pass per view; off by default."},
    )


class PredictJsonSchema(PredictOptionsSchema):
    """JSON body of POST /predict: one image, or several, as base64 or data URLs."""

    image = fields.String(metadata={"description": "One view (PNG, JPEG or DICOM): base64 or a data URL"
                                                   " (data:image/png;base64,...)."})
    name = fields.String(metadata={"description": "Name echoed back for `image`."})
    images = fields.List(fields.String(), metadata={"description": "Several views of one study, base64 or data URLs."})
    names = fields.List(fields.String(), metadata={"description": "Names echoed back for `images`, same order."})


class PredictFormSchema(PredictOptionsSchema):
    """multipart/form-data body of POST /predict."""

    image = fields.List(
        fields.Raw(metadata={"type": "string", "format": "binary"}),
        required=True,
        metadata={"description": "One part per view of the study (repeat the field)."},
    )


class DicomStudySchema(Schema):
    """What the DICOM headers say about the study (DICOM input only; never a patient attribute)."""

    study_instance_uid = fields.String(required=True)
    body_part_examined = fields.String(required=True, allow_none=True,
                                       metadata={"description": "Body Part Examined as written in the header."})
    modality = fields.String(required=True, metadata={"description": "CR, DX, RG or OT."})


class DicomViewSchema(Schema):
    """Which DICOM instance and frame a view came from (DICOM input only)."""

    sop_instance_uid = fields.String(required=True)
    series_instance_uid = fields.String(required=True)
    view_position = fields.String(required=True, allow_none=True, metadata={"description": "e.g. PA, AP, LAT."})
    laterality = fields.String(required=True, allow_none=True,
                               metadata={"description": "Image Laterality (else Laterality): L, R, U or B."})
    frame = fields.Integer(required=True, validate=validate.Range(min=1),
                           metadata={"description": "1-based frame number; each frame of a file is a view."})


class StudySchema(Schema):
    """The study-level result."""

    body_part = fields.String(required=True, validate=validate.OneOf(BODY_PARTS))
    body_part_confidence = fields.Float(required=True, validate=PROBABILITY)
    abnormality = fields.Float(required=True, validate=PROBABILITY,
                               metadata={"description": "Aggregated probability that the study is abnormal."})
    label = fields.String(required=True, validate=validate.OneOf(("normal", "abnormal")))
    threshold = fields.Float(required=True, validate=PROBABILITY,
                             metadata={"description": "The expert's decision threshold: abnormal when >= it."})
    threshold_source = fields.String(
        required=True,
        metadata={"description": "manifest, or default (no manifest.json) when the repository has no manifest "
                                 "and every threshold is 0.5: such results need a manifest before any use."})
    aggregation = fields.String(required=True, validate=validate.OneOf(list(AGGREGATIONS)))
    n_images = fields.Integer(required=True, validate=validate.Range(min=1))
    warnings = fields.List(fields.String(), required=True,
                           metadata={"description": "Why the result deserves a second look (low confidence, ...)."})
    triage = fields.String(
        required=True, allow_none=True, validate=validate.OneOf(TRIAGE_CATEGORIES),
        metadata={"description": "flagged (abnormality at or above the expert's rule-in threshold), indeterminate"
                                 " (between) or low (below its rule-out threshold); null when the repository has"
                                 " no operating points for the expert (label alone then)."})
    operating_points = fields.Dict(
        keys=fields.String(validate=validate.OneOf(("rule_out", "rule_in"))), values=fields.Float(validate=PROBABILITY),
        required=True, allow_none=True,
        metadata={"description": "The expert's {rule_out, rule_in} thresholds, or null without them."})
    calibrated = fields.Boolean(
        required=True, metadata={"description": "true when the abnormality scores are the expert's calibrated"
                                                " probabilities (the manifest's calibration), false when raw."})
    dicom = fields.Nested(DicomStudySchema, metadata={"description": "Present only when the views were DICOM."})


class ExplanationSchema(Schema):
    """Where the expert looked in one view (only with explain=true)."""

    method = fields.String(required=True, metadata={
        "description": "cam (class activation map), grad-cam, or cam*grad-cam: CAM of the last feature map "
                       "times Grad-CAM of the map at twice its resolution."})
    peak = fields.List(fields.Integer(), required=True, validate=validate.Length(equal=2),
                       metadata={"description": "[x, y] of the hottest point, in pixels of the uploaded image "
                                                "(x to the right, y down, from the top-left pixel)."})
    heatmap = fields.String(required=True, metadata={
        "description": "PNG data URL: the heatmap laid over the view, at the view's size or at most 1024 px "
                       "on the long side with the same aspect; a white ring marks the peak."})
    model = fields.String(required=True, metadata={
        "description": "file@sha256-prefix of the expert's Keras file whose weights made the map: the served "
                       "model itself on the tensorflow backend, its fp32 source where an ONNX or INT8 export "
                       "scored (docs/EXPLANATIONS.md)."})


class ViewSchema(Schema):
    """The result for one view (image) of the study."""

    name = fields.String(required=True, metadata={"description": "The uploaded file name, as sent."})
    body_part = fields.String(required=True, validate=validate.OneOf(BODY_PARTS))
    body_part_confidence = fields.Float(required=True, validate=PROBABILITY)
    body_part_scores = fields.Dict(keys=fields.String(), values=fields.Float(validate=PROBABILITY), required=True)
    abnormality = fields.Float(required=True, validate=PROBABILITY)
    out_of_distribution = fields.Boolean(
        metadata={"description": "True when the view looks unlike the radiographs the models were trained on "
                                 "(the out-of-domain gate); absent when the repository has no gate statistics."})
    ood_score = fields.Float(metadata={"description": "The gate's score (squared Mahalanobis distance to the "
                                                      "training views); flagged above the repository's threshold."})
    explanation = fields.Nested(ExplanationSchema, metadata={"description": "Only with explain=true."})
    dicom = fields.Nested(DicomViewSchema, metadata={"description": "Present only when the view was DICOM."})


class PredictResponseSchema(Schema):
    """200 answer of POST /predict."""

    study = fields.Nested(StudySchema, required=True)
    images = fields.List(fields.Nested(ViewSchema), required=True)
    models = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "Names of the router and expert models used."})
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True,
                            metadata={"description": "Milliseconds spent per stage and in total."})


class ErrorDetailSchema(Schema):
    """What went wrong, in words."""

    status = fields.Integer(required=True)
    code = fields.String(required=True, metadata={"description": "Machine-readable, e.g. unsupported_media_type."})
    message = fields.String(required=True)


class ErrorSchema(Schema):
    """Every 4xx/5xx answer."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class ModelsResponseSchema(Schema):
    """GET /models: what is loaded."""

    repository = fields.String(required=True, metadata={"description": "The repository's folder name."})
    backend = fields.String(required=True, validate=validate.OneOf(list(BACKEND_CHOICES)),
                            metadata={"description": "What runs the models (TRIAGE_BACKEND): "
                                                     + "; ".join(f"{name}: {description}"
                                                                 for name, description in BACKEND_CHOICES.items())})
    device = fields.String(required=True, metadata={"description": "e.g. GPU:0 (...) or CPU (16 cores)."})
    load_seconds = fields.Float(required=True)
    load_breakdown_seconds = fields.Dict(
        keys=fields.String(), values=fields.Float(), required=True,
        metadata={"description": "Where the start-up went: runtime_import_and_devices, manifest_and_checksums, "
                                 "models_load, models_warm_up."})
    versions = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    body_parts = fields.List(fields.String(validate=validate.OneOf(BODY_PARTS)), required=True)
    warnings = fields.List(fields.String(), required=True,
                           metadata={"description": "What is wrong with the repository (e.g. no manifest.json)."})
    models = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True,
                         metadata={"description": "Per role (router, XR_ELBOW, ...): version, input size, "
                                                  "preprocessing, classes, threshold, library, backend (the "
                                                  "one that runs it: tensorflow, onnx or int8; auto picks per "
                                                  "model); experts also operating_points {rule_out, rule_in} and "
                                                  "calibration {method, temperature, bias, ece_before, ece_after},"
                                                  " each null where the manifest has none (warnings says so)."})
    manifest = fields.Dict(required=True, metadata={"description": "manifest.json as loaded."})
    drift = fields.Dict(required=True, metadata={
        "description": "Drift monitor (docs/MONITORING.md): reference (its computed_on, or null with a note when the"
                       " repository has none), method, window, min_studies, thresholds, and per body part the"
                       " window's studies, status, PSI per signal, out-of-distribution rate and the reference's."})


class StatusSchema(Schema):
    """GET /healthz and /readyz."""

    status = fields.String(required=True, validate=validate.OneOf(("ok", "ready")))
