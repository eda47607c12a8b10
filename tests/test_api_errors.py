"""Every error leaves as one JSON shape with the right status, and the service keeps serving."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest

from tests.support.helpers import encode_image, make_radiograph, validate_against_spec
from tests.support.timing import WAIT_LIMIT_S, wait_until

PNG = make_radiograph(seed=3)
NOISY_PNG = make_radiograph(width=200, height=200, seed=4)
TRUNCATED_PNG = NOISY_PNG[: len(NOISY_PNG) // 2]
HUGE_PNG = make_radiograph(width=1000, height=600, seed=5)  # 600,000 pixels > MAX_PIXELS 500,000
TINY_PNG = make_radiograph(width=20, height=20, seed=6)  # shorter side 20 < MIN_SIDE 32
FLAT_PNG = encode_image(np.zeros((700, 650), dtype=np.uint8))  # 455,000 pixels, a few kB


def parts(*named_images: tuple[str, bytes], **fields: str) -> dict:
    """A multipart body with one 'image' part per (name, bytes), plus form fields."""
    return {"image": [(io.BytesIO(data), name) for name, data in named_images], **fields}


# (id, method, path, request keyword arguments, status, code, text the message must contain)
ERROR_CASES = [
    ("truncated-png", "POST", "/predict", {"data": parts(("cut.png", TRUNCATED_PNG))}, 400, "truncated_image",
     "cut.png"),
    ("bad-view-among-good", "POST", "/predict", {"data": parts(("ok.png", PNG), ("bad.png", TRUNCATED_PNG))}, 400,
     "truncated_image", "bad.png"),
    ("malformed-json", "POST", "/predict", {"data": b'{"image": ', "content_type": "application/json"}, 400,
     "bad_request", "JSON object"),
    ("json-not-object", "POST", "/predict", {"json": [PNG.hex()]}, 400, "bad_request", "JSON object"),
    ("json-image-not-string", "POST", "/predict", {"json": {"image": 5}}, 400, "bad_request", "image"),
    ("bad-base64", "POST", "/predict", {"json": {"image": "not*base64!"}}, 400, "bad_request", "base64"),
    ("data-url-not-base64", "POST", "/predict", {"json": {"image": "data:image/png,abc"}}, 400, "bad_request",
     "base64"),
    ("json-no-image", "POST", "/predict", {"json": {"body_part": "XR_HAND"}}, 400, "missing_image", "no image"),
    ("multipart-no-image", "POST", "/predict",
     {"data": {"body_part": "XR_HAND"}, "content_type": "multipart/form-data"}, 400, "missing_image", "no image"),
    ("urlencoded-form", "POST", "/predict", {"data": {"body_part": "XR_HAND"}}, 415, "unsupported_media_type",
     "application/x-www-form-urlencoded"),
    ("empty-raw-body", "POST", "/predict", {"data": b"", "content_type": "image/png"}, 400, "missing_image",
     "no image"),
    ("too-many-pixels", "POST", "/predict", {"data": parts(("big.png", HUGE_PNG))}, 413, "image_too_large",
     "big.png"),
    ("study-over-pixel-budget", "POST", "/predict", {"data": parts(*[(f"v{index}.png", FLAT_PNG)
                                                                      for index in range(3)])}, 413,
     "study_too_large", "over the limit of 1,000,000 per study"),
    ("bad-deadline-header", "POST", "/predict", {"data": PNG, "content_type": "image/png",
                                                "headers": {"X-Deadline-Ms": "soon"}}, 400, "bad_request",
     "X-Deadline-Ms"),
    ("too-many-views", "POST", "/predict", {"data": parts(*[(f"v{index}.png", PNG) for index in range(4)])}, 413,
     "too_many_views", "limit is 3"),
    ("too-many-bytes", "POST", "/predict", {"data": b"\x89PNG" + bytes(1_100_000), "content_type": "image/png"},
     413, "payload_too_large", "1000000 bytes"),
    ("text-file-as-image", "POST", "/predict", {"data": parts(("notes.txt", b"hello, not an image"))}, 415,
     "unsupported_media_type", "notes.txt"),
    ("wrong-content-type", "POST", "/predict", {"data": PNG, "content_type": "text/plain"}, 415,
     "unsupported_media_type", "text/plain"),
    ("no-content-type", "POST", "/predict", {"data": PNG}, 415, "unsupported_media_type", "multipart/form-data"),
    ("image-too-small", "POST", "/predict", {"data": parts(("tiny.png", TINY_PNG))}, 422, "image_too_small",
     "tiny.png"),
    ("unknown-body-part", "POST", "/predict", {"data": parts(("a.png", PNG), body_part="XR_KNEE")}, 422,
     "invalid_option", "XR_WRIST"),
    ("unknown-aggregation", "POST", "/predict", {"data": PNG, "content_type": "image/png",
                                                 "query_string": {"aggregation": "median"}}, 422,
     "invalid_option", "mean"),
    ("json-nested-1000-deep", "POST", "/predict", {"data": b"[" * 1000 + b"]" * 1000,
                                                   "content_type": "application/json"}, 400, "bad_request",
     "nested too deeply"),
    ("json-object-nested-100000-deep", "POST", "/predict", {"data": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                                            "content_type": "application/json"}, 400,
     "bad_request", "nested too deeply"),
    ("5000-tiny-parts", "POST", "/predict",
     {"data": {f"field{index}": "x" for index in range(5000)}, "content_type": "multipart/form-data"}, 413,
     "payload_too_large", "more than 1000 parts"),
    ("unknown-path", "GET", "/nowhere", {}, 404, "not_found", "openapi.json"),
    ("get-predict", "GET", "/predict", {}, 405, "method_not_allowed", "method"),
    ("delete-healthz", "DELETE", "/healthz", {}, 405, "method_not_allowed", "method"),
]


@pytest.mark.parametrize(("method", "path", "request_arguments", "status", "code", "message_part"),
                         [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_errors_have_one_json_shape_and_the_service_keeps_serving(
        client, openapi_spec, tiny_repository, method, path, request_arguments, status, code, message_part):
    response = client.open(path, method=method, **request_arguments)
    body = response.get_json()
    assert response.status_code == status, body
    assert response.mimetype == "application/json"
    validate_against_spec(openapi_spec, "Error", body)
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert message_part in body["error"]["message"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and str(tiny_repository) not in text and "<html" not in text.lower()
    assert client.post("/predict", data=PNG, content_type="image/png").status_code == 200


def test_method_not_allowed_names_the_allowed_methods(client):
    response = client.get("/predict")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"] and "GET" not in response.headers["Allow"]


def test_unexpected_exception_is_a_500_without_trace_or_path(tmp_path, caplog):
    from app import create_app

    flask_app = create_app({"MODELS_DIR": str(tmp_path / "none"), "LOAD_IN_BACKGROUND": True})

    @flask_app.get("/explode")
    def explode():
        raise RuntimeError(f"secret detail in {tmp_path}: Unable to convert '1927-08-15' to 'DA' object")

    caplog.set_level("DEBUG")
    response = flask_app.test_client().get("/explode")
    # The log keeps the type and the frames, never the message (it may quote a header value).
    assert "builtins.RuntimeError at " in caplog.text and "in explode" in caplog.text
    assert "1927-08-15" not in caplog.text and "secret detail" not in caplog.text
    assert response.status_code == 500
    assert response.get_json()["error"] == {"status": 500, "code": "internal_error",
                                            "message": "internal server error; the details are in the service log"}
    assert str(tmp_path) not in response.get_data(as_text=True)


def test_failed_repository_is_a_permanent_failure_that_healthz_shows(tmp_path):
    from app import create_app

    flask_app = create_app({"MODELS_DIR": str(tmp_path / "empty"), "LOAD_IN_BACKGROUND": True})
    flask_app.extensions["pipeline_loader"].loaded.wait(timeout=120)
    client = flask_app.test_client()
    # Failed for good: no "retry shortly", and the liveness probe fails so an orchestrator sees it.
    for path, method in (("/healthz", "GET"), ("/readyz", "GET"), ("/predict", "POST"), ("/models", "GET")):
        response = client.open(path, method=method, data=PNG, content_type="image/png")
        assert response.status_code == 503, path
        assert "Retry-After" not in response.headers, path
        error = response.get_json()["error"]
        assert error["code"] == "load_failed"
        assert error["message"].startswith("the model repository failed to load")
        assert "empty" in error["message"] and str(tmp_path) not in error["message"]


def _gated_router_app(repository, monkeypatch: pytest.MonkeyPatch, **config):
    """An app whose router holds each batch until the test opens `extensions["router_gate"]` (a busy machine)."""
    from app import create_app

    flask_app = create_app({"MODELS_DIR": str(repository), "WARMUP": False, **config})
    runner = flask_app.extensions["pipeline_loader"].pipeline.models["router"].runner
    forward = runner.forward
    seen: list[int] = []
    gate = threading.Event()

    def gated_forward(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        gate.wait(WAIT_LIMIT_S)
        return forward(batch)

    monkeypatch.setattr(runner, "forward", gated_forward)
    flask_app.extensions["router_batches"] = seen
    flask_app.extensions["router_gate"] = gate
    return flask_app


def _close_gated(flask_app) -> None:
    flask_app.extensions["router_gate"].set()
    flask_app.extensions["pipeline_loader"].close()


def _post_in_thread(flask_app, statuses: list[int]) -> threading.Thread:
    """POST one study from a thread; its status lands in `statuses`."""
    thread = threading.Thread(target=lambda: statuses.append(
        flask_app.test_client().post("/predict", data=PNG, content_type="image/png").status_code))
    thread.start()
    return thread


@pytest.fixture
def slow_batch_app(tiny_repository, monkeypatch):
    """The router holds each study until the test opens the gate; one prediction in flight at most."""
    flask_app = _gated_router_app(tiny_repository, monkeypatch, MAX_IN_FLIGHT=1)
    yield flask_app
    _close_gated(flask_app)


@pytest.fixture
def busy_router_app(tiny_repository, monkeypatch):
    """The router holds each study until the test opens the gate; several may be in flight, so later ones queue."""
    flask_app = _gated_router_app(tiny_repository, monkeypatch, MAX_IN_FLIGHT=4)
    yield flask_app
    _close_gated(flask_app)


@pytest.fixture
def one_view_queue_app(tiny_repository, monkeypatch):
    """The router holds each study until the test opens the gate; one view fills its queue."""
    flask_app = _gated_router_app(tiny_repository, monkeypatch, MAX_IN_FLIGHT=4, MAX_QUEUE_VIEWS=1)
    yield flask_app
    _close_gated(flask_app)


def test_full_batch_queue_answers_503_overloaded_with_retry_after(one_view_queue_app):
    pipeline = one_view_queue_app.extensions["pipeline_loader"].pipeline
    first_status: list[int] = []
    first = _post_in_thread(one_view_queue_app, first_status)
    wait_until(lambda: pipeline.queue_depths()["router"] == 1, "the first study held the router")
    response = one_view_queue_app.test_client().post("/predict", json={"image": base64.b64encode(PNG).decode()})
    one_view_queue_app.extensions["router_gate"].set()
    first.join(timeout=WAIT_LIMIT_S)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "overloaded"
    assert int(response.headers["Retry-After"]) >= 1
    assert first_status == [200]


def test_study_that_cannot_start_within_its_deadline_is_503_and_never_computed(busy_router_app):
    first_status: list[int] = []
    first = _post_in_thread(busy_router_app, first_status)
    wait_until(lambda: busy_router_app.extensions["router_batches"], "the first study held the router")
    # Nothing measured yet, so the study is queued; the router is held until after the answer, so a 503 here
    # came at the deadline, not after the router freed.
    response = busy_router_app.test_client().post("/predict", data=PNG, content_type="image/png",
                                                  headers={"X-Deadline-Ms": "150"})
    busy_router_app.extensions["router_gate"].set()
    first.join(timeout=WAIT_LIMIT_S)
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "overloaded"
    assert int(response.headers["Retry-After"]) >= 1
    assert first_status == [200]
    assert busy_router_app.extensions["pipeline_loader"].pipeline.queue_depths()["router"] == 0
    assert busy_router_app.extensions["router_batches"] == [1]  # only the first study's view was computed


def test_study_that_cannot_start_in_time_is_refused_before_its_body_is_parsed(busy_router_app, monkeypatch):
    import classifiers.pipeline as pipeline_module
    import web.routes

    gate = busy_router_app.extensions["router_gate"]
    warm_status: list[int] = []
    warm = _post_in_thread(busy_router_app, warm_status)
    wait_until(lambda: busy_router_app.extensions["router_batches"], "the first study reached the router")
    time.sleep(0.6)  # a lower bound, not a verdict: the router measures at least 0.6 s per view
    gate.set()
    warm.join(timeout=WAIT_LIMIT_S)
    assert warm_status == [200]
    gate.clear()
    decoded: list[int] = []
    parsed: list[str] = []
    decode_probed, parse = pipeline_module.decode_probed, web.routes.parse_predict_request
    monkeypatch.setattr(pipeline_module, "decode_probed",
                        lambda probed: decoded.append(probed.num_frames) or decode_probed(probed))
    monkeypatch.setattr(web.routes, "parse_predict_request",
                        lambda request, max_views: parsed.append(request.path) or parse(request, max_views))
    first_status: list[int] = []
    first = _post_in_thread(busy_router_app, first_status)
    pipeline = busy_router_app.extensions["pipeline_loader"].pipeline
    wait_until(lambda: pipeline.queue_depths()["router"] == 1, "the first study's view held the router")
    response = busy_router_app.test_client().post("/predict", data=PNG, content_type="image/png",
                                                  headers={"X-Deadline-Ms": "500"})
    gate.set()
    first.join(timeout=WAIT_LIMIT_S)
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "overloaded"
    assert first_status == [200]
    assert decoded == [1] and parsed == ["/predict"]  # the first study only: the refused one was never parsed


def test_a_study_whose_decoding_outlasts_its_deadline_is_still_served(tiny_repository, monkeypatch):
    import classifiers.pipeline as pipeline_module
    from app import create_app

    decode_probed = pipeline_module.decode_probed

    def slow_decode(probed):
        time.sleep(0.4)  # huge views: decoding alone takes longer than the client's deadline
        return decode_probed(probed)

    monkeypatch.setattr(pipeline_module, "decode_probed", slow_decode)
    flask_app = create_app({"MODELS_DIR": str(tiny_repository), "WARMUP": False})
    response = flask_app.test_client().post("/predict", data=PNG, content_type="image/png",
                                            headers={"X-Deadline-Ms": "200"})
    flask_app.extensions["pipeline_loader"].close()
    assert response.status_code == 200, response.get_json()  # nothing was waiting: the deadline bounds queueing


def test_predictions_beyond_the_in_flight_limit_are_refused_at_once_and_probes_answer(slow_batch_app):
    first_status: list[int] = []
    first = _post_in_thread(slow_batch_app, first_status)
    in_flight = slow_batch_app.extensions["in_flight"]
    wait_until(lambda: slow_batch_app.extensions["router_batches"], "the first study held the router")
    client = slow_batch_app.test_client()
    # The router is held until after these answers: each came without waiting for it.
    response = client.post("/predict", data=PNG, content_type="image/png")
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "overloaded"
    assert in_flight.in_flight == 1
    for probe in ("/healthz", "/readyz"):
        assert client.get(probe).status_code == 200
    slow_batch_app.extensions["router_gate"].set()
    first.join(timeout=WAIT_LIMIT_S)
    assert first_status == [200] and in_flight.in_flight == 0
