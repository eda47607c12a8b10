"""The HTTP endpoints: they only translate between HTTP and classifiers."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from flask import Blueprint, Response, current_app, g, jsonify, request

from classifiers.dicom import is_dicom
from classifiers.results import StudyResult
from classifiers.secondary_capture import build_heatmap_captures, capture_bytes
from classifiers.structured_report import build_structured_report, structured_report_bytes
from web.audit import audit_secret, hash_study_uid, write_audit_line
from web.errors import ApiError, error_response
from web.loading import PipelineLoader, get_pipeline, not_ready_error
from web.requests import parse_predict_request
from web.shedding import request_client, request_deadline

blueprint = Blueprint("triage", __name__)
DICOM_TYPE = "application/dicom"
# DICOMweb's form of several instances in one answer: the SR, then one heatmap Secondary Capture per view.
DICOM_INSTANCES_TYPE = 'multipart/related; type="application/dicom"'
ANSWER_TYPES = ["application/json", DICOM_TYPE, DICOM_INSTANCES_TYPE]  # the first wins when Accept allows several
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
    answer_type = request.accept_mimetypes.best_match(ANSWER_TYPES)
    wants_dicom = answer_type in (DICOM_TYPE, DICOM_INSTANCES_TYPE)
    with current_app.extensions["in_flight"].admit(request_client(request, current_app.config, g.key_id)):
        pipeline.refuse_if_late(deadline)  # before the body is parsed: a quick 503 when the queue is too long
        parsed = parse_predict_request(request, current_app.config["MAX_VIEWS"])
        if wants_dicom and not all(is_dicom(view.data) for view in parsed.views):
            raise ApiError(406, "not_acceptable", "a DICOM SR answer (Accept: application/dicom) needs DICOM input;"
                                                  " send DICOM views or accept application/json")
        result = pipeline.predict_study(parsed.views, body_part=parsed.body_part, aggregation=parsed.aggregation,
                                        deadline=deadline, explain=parsed.explain)
    study_uid_hash = hash_study_uid(result.dicom.study_instance_uid, audit_secret(current_app)) \
        if result.dicom is not None else None
    write_audit_line(current_app, g.key_id, result, (time.monotonic() - started) * 1000, study_uid_hash)
    if answer_type == DICOM_INSTANCES_TYPE:
        return dicom_instances_response(result)
    if wants_dicom:
        report = build_structured_report(result.source_headers, result)
        return Response(structured_report_bytes(report), mimetype=DICOM_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{SR_FILE_NAME}"'})
    return jsonify(result.to_dict())


def dicom_instances_response(result: StudyResult) -> Response:
    """multipart/related: the SR, then (with explain=true) each view's heatmap as a Secondary Capture."""
    instances = [structured_report_bytes(build_structured_report(result.source_headers, result))]
    overlays = [view.explanation.heatmap_png for view in result.images if view.explanation is not None]
    if overlays:
        instances += [capture_bytes(capture) for capture in build_heatmap_captures(result.source_headers, overlays)]
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: {DICOM_TYPE}\r\n\r\n".encode() + instance + b"\r\n"
                    for instance in instances) + f"--{boundary}--\r\n".encode()
    return Response(body, content_type=f'{DICOM_INSTANCES_TYPE}; boundary="{boundary}"')


@blueprint.get("/models")
def models() -> Response:
    """Describe what is loaded; the repository is named by its folder, never its server path."""
    description = dict(get_pipeline().describe())
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
