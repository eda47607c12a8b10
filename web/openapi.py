"""The OpenAPI 3 document, generated from the marshmallow schemas with apispec."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from web import schemas

API_VERSION = "1.0.0"


def error_response(description: str, retry_after: bool = False) -> dict[str, Any]:
    """An OpenAPI response object for the one error shape."""
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": "Error"}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying",
                                               "schema": {"type": "integer"}}}
    return response


def json_response(description: str, schema: str) -> dict[str, Any]:
    """An OpenAPI response object with a JSON body of the named schema."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ANY_ERROR = {"description": "Any other error (404, 405, 500), same JSON shape.",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

PREDICT_OPERATION: dict[str, Any] = {
    "summary": "Triage one study: route it to a body part, then score its abnormality.",
    "parameters": [
        {"in": "query", "name": "body_part", "schema": {"type": "string", "enum": list(schemas.BODY_PARTS)},
         "description": "Skip routing (also accepted as a form field or JSON key)."},
        {"in": "query", "name": "aggregation", "schema": {"type": "string", "enum": list(schemas.AGGREGATIONS)}},
        {"in": "query", "name": "name", "schema": {"type": "string"},
         "description": "Name echoed back for a raw image body."},
    ],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": "PredictForm"},
        "application/json": {"schema": "PredictJson"},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/dicom": {"schema": {"type": "string", "format": "binary"}},
    }},
    "responses": {
        "200": {"description": "The study's body part and abnormality, and each view's (JSON); or, with Accept:"
                               " application/dicom and DICOM views, a DICOM SR (TID 1500 Measurement Report, in a"
                               " Comprehensive 3D SR) in the same study; or, with Accept: multipart/related;"
                               " type=\"application/dicom\", the SR followed, when explain=true, by one heatmap"
                               " Secondary Capture and one Grayscale Softcopy Presentation State per view; or, with"
                               " Accept: application/fhir+json, a FHIR R4 DiagnosticReport with its Observations."
                               " Heatmaps are computed only for the JSON and multipart answers.",
                "content": {"application/json": {"schema": "PredictResponse"},
                            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                            'multipart/related; type="application/dicom"': {
                                "schema": {"type": "string", "format": "binary"}},
                            "application/fhir+json": {"schema": {"type": "object"}}}},
        "400": error_response("Malformed: truncated image or DICOM file, a DICOM header that contradicts itself"
                              " or its compressed frames' own headers, degenerate LUT values, bad JSON or base64,"
                              " no image."),
        "406": error_response("A DICOM or FHIR answer (Accept) asked for a study that is not DICOM."),
        "413": error_response("Too large: request bytes, pixels of a view (DICOM: rows x columns x frames, or what a"
                              " compressed frame's own header declares), or views."),
        "415": error_response("Not an image this service reads, a DICOM transfer syntax without a codec, or a"
                              " content type it does not accept."),
        "422": error_response("Valid request refused: image too small, unknown body_part or aggregation, DICOM of"
                              " another modality (unsupported_modality), without pixel data (no_pixel_data), or of"
                              " several studies (mixed_studies), or an SR or Secondary Capture that cannot be"
                              " written from the headers (report_not_writable)."),
        "503": error_response("Models not loaded yet, or the batch queue is full.", retry_after=True),
    },
}


def build_openapi(title: str = "Radiograph triage service") -> dict[str, Any]:
    """Return the OpenAPI 3 document of the HTTP API as a dict."""
    spec = APISpec(title=title, version=API_VERSION, openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": "Two-stage MURA-style triage: a body-part router, then that part's "
                                        "abnormality model. Not for clinical use with the demo models."})
    for name, schema in (("PredictForm", schemas.PredictFormSchema), ("PredictJson", schemas.PredictJsonSchema),
                         ("PredictResponse", schemas.PredictResponseSchema), ("Error", schemas.ErrorSchema),
                         ("Models", schemas.ModelsResponseSchema), ("Status", schemas.StatusSchema)):
        spec.components.schema(name, schema=schema)
    spec.path(path="/predict", operations={"post": PREDICT_OPERATION})
    spec.path(path="/models", operations={"get": {
        "summary": "What is loaded: manifest, device, versions.",
        "responses": {"200": json_response("The loaded models.", "Models"),
                      "503": error_response("Models not loaded yet.", retry_after=True)}}})
    spec.path(path="/healthz", operations={"get": {
        "summary": "Liveness: 200 while the process serves.",
        "responses": {"200": json_response("Alive.", "Status")}}})
    spec.path(path="/readyz", operations={"get": {
        "summary": "Readiness: 200 once every model is loaded and warmed up.",
        "responses": {"200": json_response("Ready.", "Status"),
                      "503": error_response("Still loading, or the load failed (the message says why).",
                                            retry_after=True)}}})
    spec.path(path="/metrics", operations={"get": {
        "summary": "Prometheus metrics.",
        "responses": {"200": {"description": "Prometheus text format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}}})
    spec.path(path="/openapi.json", operations={"get": {
        "summary": "This document.",
        "responses": {"200": {"description": "OpenAPI 3 document.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}})
    spec.path(path="/", operations={"get": {
        "summary": "The predict page.",
        "responses": {"200": {"description": "HTML page.",
                              "content": {"text/html": {"schema": {"type": "string"}}}}}}})
    document = spec.to_dict()
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"]["default"] = ANY_ERROR
    return document
