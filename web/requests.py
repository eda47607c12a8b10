"""Turn a POST /predict request (multipart, raw image body or JSON) into views and options."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import IO, Any

from flask import Request
from marshmallow import ValidationError
from werkzeug.utils import cached_property

from classifiers.names import printable_name
from classifiers.results import ViewInput
from web.errors import ApiError
from web.schemas import PredictJsonSchema, PredictOptionsSchema
from web.streamed_body import LimitedStreamedBody

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "application/dicom")
ACCEPTED_FORMS = (
    "send multipart/form-data with one or more 'image' parts, a raw image/png, image/jpeg or application/dicom"
    ' body, or JSON {"image": "<base64 or data URL>"}'
)
DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+)?(?P<parameters>(;[^,;]*)*?),", re.ASCII)
MAX_NAME_LENGTH = 200


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory: nothing uploaded is ever written to disk."""

    @cached_property
    def stream(self) -> IO[bytes]:
        """The body; one sent without Content-Length (chunked) is refused with 413 as soon as it passes the limit."""
        limit = self.max_content_length
        if self.content_length is None and limit is not None and self.environ.get("wsgi.input_terminated"):
            return LimitedStreamedBody(self.environ["wsgi.input"], limit)
        return super().stream

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> io.BytesIO:
        return io.BytesIO()


@dataclass(frozen=True)
class PredictRequest:
    """What POST /predict asked for: the views of one study and the options."""

    views: list[ViewInput]
    body_part: str | None
    aggregation: str
    explain: bool = False


def clean_view_name(name: str | None, index: int) -> str:
    """Return a safe display name: the base name, hidden characters escaped (see printable_name), <= 200 long."""
    if not name:
        return f"image{index}"
    # Browsers on Windows send C:\fakepath\a.png; clients may send paths. Keep only the last part.
    base_name = re.split(r"[\\/]", name)[-1]
    base_name = printable_name(base_name.strip())[:MAX_NAME_LENGTH]
    return base_name or f"image{index}"


def decode_base64_image(text: str, name: str) -> bytes:
    """Decode a base64 string or a data URL into bytes; 400 naming the view when it is neither."""
    match = DATA_URL.match(text)
    if match:
        if ";base64" not in match.group("parameters").lower():
            raise ApiError(400, "bad_request",
                           f"{name}: the data URL is not base64-encoded; use data:image/png;base64,...")
        text = text[match.end():]
    compact = re.sub(r"\s+", "", text)
    if not compact:
        raise ApiError(400, "missing_image", f"{name}: the image string is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_request", f"{name}: the image is neither base64 nor a base64 data URL") from None


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for field, messages in sorted(error.normalized_messages().items()):
        flat = messages if isinstance(messages, list) else [f"item {key}: {value}" for key, value in messages.items()]
        parts.append(f"{field}: {' '.join(map(str, flat))}")
    return "; ".join(parts)


def check_view_count(num_views: int, max_views: int) -> None:
    """Refuse a study with no image (400) or more images than the limit (413)."""
    if num_views == 0:
        raise ApiError(400, "missing_image", f"no image in the request; {ACCEPTED_FORMS}")
    if num_views > max_views:
        raise ApiError(413, "too_many_views",
                       f"{num_views} images in one study, the limit is {max_views}; send at most {max_views} views")


def load_options(values: dict[str, Any]) -> tuple[str | None, str, bool]:
    """Validate body_part, aggregation and explain; 422 names the field and the allowed values."""
    present = {key: value for key, value in values.items() if value not in (None, "")}
    try:
        options = PredictOptionsSchema().load(present)
    except ValidationError as error:
        raise ApiError(422, "invalid_option", describe_validation_error(error)) from None
    return options.get("body_part"), options.get("aggregation", "mean"), options.get("explain", False)


def option_values(request: Request, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect body_part/aggregation/explain from the query string, then the form or JSON body (body wins)."""
    values: dict[str, Any] = {}
    for source in (request.args, request.form if body is None else body):
        for key in ("body_part", "aggregation", "explain"):
            if source.get(key) not in (None, ""):
                values[key] = source.get(key)
    return values


def parse_multipart(request: Request, max_views: int) -> PredictRequest:
    """Read one study from multipart/form-data 'image' parts."""
    files = [part for part in request.files.getlist("image") if part.filename or part.content_length]
    check_view_count(len(files), max_views)
    views = [ViewInput(name=clean_view_name(part.filename, index), data=part.read())
             for index, part in enumerate(files, start=1)]
    unknown = sorted(set(request.files) - {"image"})
    if unknown and not views:
        raise ApiError(400, "missing_image", f"file parts {unknown} are not read; name the parts 'image'")
    return PredictRequest(views, *load_options(option_values(request)))


def parse_raw_image(request: Request, max_views: int) -> PredictRequest:
    """Read one view sent as the raw request body."""
    data = request.get_data(cache=False)
    check_view_count(1 if data else 0, max_views)
    name = clean_view_name(request.args.get("name"), 1)
    return PredictRequest([ViewInput(name=name, data=data)], *load_options(option_values(request)))


def parse_json(request: Request, max_views: int) -> PredictRequest:
    """Read one study from JSON {"image": ...} or {"images": [...], "names": [...]}."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON body is nested too deeply; send a flat JSON object "
                       '{"image": "<base64 or data URL>"}') from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", 'the body is not a JSON object; send {"image": "<base64 or data URL>"}')
    try:
        image_fields = {key: body[key] for key in ("image", "images", "name", "names") if key in body}
        fields = PredictJsonSchema().load(image_fields)
    except ValidationError as error:
        raise ApiError(400, "bad_request", describe_validation_error(error)) from None
    images = list(fields.get("images", []))
    names = list(fields.get("names", []))
    if "image" in fields:
        images.insert(0, fields["image"])
        names.insert(0, fields.get("name", ""))
    check_view_count(len(images), max_views)
    names += [""] * (len(images) - len(names))
    views = []
    for index, (text, raw_name) in enumerate(zip(images, names, strict=False), start=1):
        name = clean_view_name(raw_name, index)
        views.append(ViewInput(name=name, data=decode_base64_image(text, name)))
    return PredictRequest(views, *load_options(option_values(request, body)))


def parse_predict_request(request: Request, max_views: int) -> PredictRequest:
    """Dispatch on the content type; 415 for a type this endpoint does not read."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        return parse_multipart(request, max_views)
    if mimetype in RAW_IMAGE_TYPES:
        return parse_raw_image(request, max_views)
    if mimetype == "application/json":
        return parse_json(request, max_views)
    shown = mimetype or "no content type"
    raise ApiError(415, "unsupported_media_type", f"{shown} is not accepted; {ACCEPTED_FORMS}")


class CompleteBodyInput(io.RawIOBase):
    """wsgi.input that raises ConnectionResetError when the body ends before its Content-Length.

    gunicorn hands a short body over as if it were complete; werkzeug turns this error into
    ClientDisconnected, which the error handler counts as a disconnect rather than a bad request.
    """

    def __init__(self, stream: Any, content_length: int) -> None:
        super().__init__()
        self.stream = stream
        self.remaining = content_length

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer`; an early end of the body is a disconnect."""
        if self.remaining <= 0:
            return 0
        data = self.stream.read(min(len(buffer), self.remaining))
        if not data:
            raise ConnectionResetError(f"the client sent {self.remaining} bytes fewer than its Content-Length")
        buffer[: len(data)] = data
        self.remaining -= len(data)
        return len(data)


def detect_disconnects(wsgi_app: Any) -> Any:
    """WSGI middleware: wrap a request body of known length in CompleteBodyInput."""

    def app_with_check(environ: dict[str, Any], start_response: Any) -> Any:
        length = environ.get("CONTENT_LENGTH", "")
        if length.isdigit() and int(length) > 0:
            environ["wsgi.input"] = CompleteBodyInput(environ["wsgi.input"], int(length))
        return wsgi_app(environ, start_response)

    return app_with_check
