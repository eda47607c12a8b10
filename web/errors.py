"""The one JSON error shape and the one handler every 4xx/5xx leaves through."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, has_request_context, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, MethodNotAllowed

from classifiers import errors as classifier_errors
from classifiers.logs import describe_exception

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the web layer raises itself: HTTP status, machine code, message in words."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


# classifiers error -> (HTTP status, code). Subclasses are listed before their bases.
CLASSIFIER_ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    classifier_errors.MalformedDicom: (400, "malformed_dicom"),
    classifier_errors.TruncatedImage: (400, "truncated_image"),
    classifier_errors.ImageTooLarge: (413, "image_too_large"),
    classifier_errors.StudyTooLarge: (413, "study_too_large"),
    classifier_errors.TooManyViews: (413, "too_many_views"),
    classifier_errors.NoReadableView: (422, "no_readable_view"),
    classifier_errors.UnsupportedTransferSyntax: (415, "unsupported_transfer_syntax"),
    classifier_errors.UnreadableImage: (415, "unsupported_media_type"),
    classifier_errors.UnsupportedModality: (422, "unsupported_modality"),
    classifier_errors.NoPixelData: (422, "no_pixel_data"),
    classifier_errors.MixedStudies: (422, "mixed_studies"),
    classifier_errors.ImageTooSmall: (422, "image_too_small"),
    classifier_errors.InvalidOption: (422, "invalid_option"),
    classifier_errors.NotARadiograph: (422, "not_a_radiograph"),
    classifier_errors.ReportNotWritable: (422, "report_not_writable"),
    classifier_errors.Overloaded: (503, "overloaded"),
    classifier_errors.ExplanationUnavailable: (500, "explanation_unavailable"),
    classifier_errors.ModelRepositoryError: (503, "not_ready"),
}

CLIENT_DISCONNECTED = 499

# Flask / Werkzeug HTTP errors -> code; the message is ours, never Werkzeug's HTML.
HTTP_ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "the request could not be read"),
    404: ("not_found", "no such endpoint; see /openapi.json for the API"),
    405: ("method_not_allowed", "this endpoint does not accept that HTTP method"),
    406: ("not_acceptable", "this endpoint cannot answer in the media type asked for in Accept"),
    413: ("payload_too_large", "the request is larger than this service accepts"),
    415: ("unsupported_media_type", "unsupported content type"),
}


def error_response(status: int, code: str, message: str, retry_after_s: int | None = None) -> Response:
    """Build the JSON error response {"error": {"status", "code", "message"}}."""
    response = jsonify({"error": {"status": status, "code": code, "message": message}})
    response.status_code = status
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, int(retry_after_s)))
    return response


def describe_too_large(content_length: int | None, max_request_bytes: int | None, max_form_parts: int) -> str:
    """Name the limit a 413 from the form parser hit: the request's bytes or its number of parts."""
    within_bytes = content_length is not None and max_request_bytes is not None and content_length <= max_request_bytes
    if within_bytes:
        return (f"the multipart body has more than {max_form_parts} parts; send one 'image' part per view "
                "and only the body_part and aggregation fields")
    return f"the request is larger than the limit of {max_request_bytes} bytes; send fewer or smaller images"


def classify_exception(error: BaseException, max_request_bytes: int | None) -> tuple[int, str, str, int | None]:
    """Map any exception to (status, code, message, retry_after_s) without leaking internals."""
    if isinstance(error, ApiError):
        return error.status, error.code, error.message, error.retry_after_s
    if isinstance(error, ClientDisconnected):
        # Not a bad request: the client went away. 499 (nginx's code for it) keeps it apart in the access
        # log and in triage_http_requests{status="499"}; nobody is left to read the answer.
        message = "the client closed the connection before sending the whole request"
        return CLIENT_DISCONNECTED, "client_disconnected", message, None
    for error_class, (status, code) in CLASSIFIER_ERROR_STATUS.items():
        if isinstance(error, error_class):
            retry_after_s = getattr(error, "retry_after_s", None) if status == 503 else None
            if status == 503 and retry_after_s is None:
                retry_after_s = classifier_errors.DEFAULT_RETRY_AFTER_S
            return status, code, str(error), retry_after_s
    if isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        code, message = HTTP_ERROR_CODES.get(error.code, ("http_error", "the request was refused"))
        if error.code == 413 and max_request_bytes:
            message = describe_too_large(_request_content_length(), max_request_bytes,
                                         current_app.config["MAX_FORM_PARTS"])
        return error.code, code, message, None
    return 500, "internal_error", "internal server error; the details are in the service log", None


def _request_content_length() -> int | None:
    """The Content-Length of the request being answered, if there is one."""
    return request.content_length if has_request_context() else None


def drain_request_body() -> None:
    """Read what is left of a refused request's body (at most MAX_CONTENT_LENGTH).

    Answered before its body was read, the connection would be closed on a client still sending: it
    sees a reset instead of the 401 or 503. Reading the rest lets it read the answer.
    """
    if not has_request_context():
        return
    try:
        request.stream.exhaust()
    except Exception:  # noqa: BLE001 - a client gone or a body over the limit: nothing left to save
        pass


def register_error_handler(app: Flask) -> None:
    """Install the single handler that turns every exception and HTTP error into the JSON shape."""

    @app.errorhandler(Exception)
    def handle_any_error(error: Exception) -> Response:
        status, code, message, retry_after_s = classify_exception(error, app.config.get("MAX_CONTENT_LENGTH"))
        if status == CLIENT_DISCONNECTED:
            logger.info("client disconnected before sending the whole request")
        if status >= 500 and code == "internal_error":
            # Type and frames only: a library's message may quote a header value (patient data).
            logger.error("unhandled error while serving a request: %s", describe_exception(error))
        elif status == 500:
            logger.error("%s: %s", code, message)  # a fault of the repository the operator must fix
        response = error_response(status, code, message, retry_after_s)
        if status in (401, 503):
            drain_request_body()
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="triage"'
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response
