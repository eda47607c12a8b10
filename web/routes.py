"""The HTTP endpoints: they only translate between HTTP and classifiers."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from flask import Blueprint, Response, current_app, g, jsonify, request

from classifiers.decoding.dicom import is_dicom
from classifiers.outputs.dicom_outputs import DicomOutputs, build_dicom_outputs, scoring_backend
from classifiers.outputs.fhir_report import FHIR_JSON, build_fhir_report
from classifiers.study_request import StudyRequest
from web.audit import audit_secret, hash_study_uid, write_audit_line
from web.errors import ApiError, error_response
from web.loading import PipelineLoader, get_pipeline, not_ready_error
from web.requests import parse_predict_request
from web.shedding import request_client, request_deadline

blueprint = Blueprint("triage", __name__)
DICOM_TYPE = "application/dicom"
# DICOMweb's form of several instances in one answer: the SR, then one heatmap Secondary Capture per view.
DICOM_INSTANCES_TYPE = 'multipart/related; type="application/dicom"'
# FHIR clients may name the version (R4 is FHIR 4.0); both forms get the same answer.
FHIR_R4_JSON = f"{FHIR_JSON}; fhirVersion=4.0"
# The first wins when Accept allows several.
ANSWER_TYPES = ["application/json", DICOM_TYPE, DICOM_INSTANCES_TYPE, FHIR_JSON, FHIR_R4_JSON]
# Answers that can carry heatmaps; for the others explain=true is not computed (docs/API.md).
EXPLAINABLE_TYPES = ("application/json", DICOM_INSTANCES_TYPE)
SR_FILE_NAME = "triage-result-sr.dcm"


@blueprint.get("/")
def predict_page() -> Response:
    """Serve the predict page."""
    response = current_app.send_static_file("predict.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.post("/predict")
def predict() -> Response:
    """Triage one study sent as multipart, a raw image body or JSON; JSON answer, or a DICOM SR when asked."""
    started = time.monotonic()
    pipeline = get_pipeline()
    deadline = request_deadline(request, current_app.config, started)
    answer_type = request.accept_mimetypes.best_match(ANSWER_TYPES) or ANSWER_TYPES[0]  # JSON when none fits
    answer_type = FHIR_JSON if answer_type == FHIR_R4_JSON else answer_type
    wants_dicom = answer_type in (DICOM_TYPE, DICOM_INSTANCES_TYPE, FHIR_JSON)
    with current_app.extensions["in_flight"].admit(request_client(request, current_app.config, g.key_id)):
        pipeline.refuse_if_late(deadline)  # before the body is parsed: a quick 503 when the queue is too long
        parsed = parse_predict_request(request, current_app.config["MAX_VIEWS"])
        if wants_dicom and not all(is_dicom(view.data) for view in parsed.views):
            raise ApiError(406, "not_acceptable", f"a {answer_type} answer needs DICOM input (it is written in the"
                                                  " DICOM study); send DICOM views or accept application/json")
        # Heatmaps are computed only for the answers that carry them (JSON, the multipart DICOM answer).
        explain = parsed.explain and answer_type in EXPLAINABLE_TYPES
        result = pipeline.run(StudyRequest(tuple(parsed.views), parsed.body_part, parsed.aggregation, explain,
                                           deadline))
    study_uid_hash = hash_study_uid(result.dicom.study_instance_uid, audit_secret(current_app)) \
        if result.dicom is not None else None
    write_audit_line(current_app, g.key_id, result, (time.monotonic() - started) * 1000, study_uid_hash)
    backend = scoring_backend(pipeline, result)
    if answer_type == FHIR_JSON:
        return Response(build_fhir_report(result, backend=backend).model_dump_json(exclude_none=True),
                        mimetype=FHIR_JSON)
    if wants_dicom:
        outputs = build_dicom_outputs(result, explained=answer_type == DICOM_INSTANCES_TYPE, backend=backend)
        if answer_type == DICOM_INSTANCES_TYPE:
            return dicom_instances_response(outputs)
        return Response(outputs.instances_bytes()[0], mimetype=DICOM_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{SR_FILE_NAME}"'})
    return jsonify(result.to_dict())


def dicom_instances_response(outputs: DicomOutputs) -> Response:
    """multipart/related: the SR, then (with explain=true) each view's heatmap Secondary Capture, then its GSPS."""
    instances = outputs.instances_bytes()
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: {DICOM_TYPE}\r\n\r\n".encode() + instance + b"\r\n"
                    for instance in instances) + f"--{boundary}--\r\n".encode()
    return Response(body, content_type=f'{DICOM_INSTANCES_TYPE}; boundary="{boundary}"')


@blueprint.get("/models")
def models() -> Response:
    """Describe what is loaded; the repository is named by its folder, never its server path."""
    description = dict(get_pipeline().describe())
    description["drift"] = current_app.extensions["drift_monitor"].describe()
    if description.get("repository") is not None:
        description["repository"] = Path(str(description["repository"])).name
    return jsonify(description)


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: 200 while the process serves (loading included); 503 load_failed once loading failed for good."""
    loader: PipelineLoader = current_app.extensions["pipeline_loader"]
    if loader.failure is not None:
        return error_response(503, "load_failed", loader.failure)
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 once every model is loaded and warmed up, 503 with the reason before."""
    error = not_ready_error(current_app.extensions["pipeline_loader"])
    if error is not None:
        return error_response(error.status, error.code, error.message, error.retry_after_s)
    return jsonify({"status": "ready"})


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of this process."""
    return current_app.extensions["metrics"].render()


@blueprint.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 document."""
    return jsonify(current_app.extensions["openapi"])
