"""The Flask service: every input form of POST /predict, the other endpoints, configuration, loading."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import make_radiograph, multipart, validate_against_spec

ROOT = Path(__file__).resolve().parents[1]
PNG = make_radiograph(seed=1)
JPEG = make_radiograph(seed=2, image_format="JPEG")
PNG_BASE64 = base64.b64encode(PNG).decode()


# (id, request keyword arguments for client.post, expected view names)
INPUT_FORMS = [
    ("multipart-one", {"data": multipart(("a.png", PNG))}, ["a.png"]),
    ("multipart-two-views", {"data": multipart(("a.png", PNG), ("b.jpg", JPEG))}, ["a.png", "b.jpg"]),
    ("raw-png", {"data": PNG, "content_type": "image/png"}, ["image1"]),
    ("raw-jpeg-named", {"data": JPEG, "content_type": "image/jpeg", "query_string": {"name": "lat.jpg"}},
     ["lat.jpg"]),
    ("json-base64", {"json": {"image": PNG_BASE64}}, ["image1"]),
    ("json-data-url", {"json": {"image": "data:image/png;base64," + PNG_BASE64, "name": "x.png"}}, ["x.png"]),
    ("json-wrapped-base64", {"json": {"image": "\n".join([PNG_BASE64[:60], PNG_BASE64[60:]])}}, ["image1"]),
    ("json-images", {"json": {"images": [PNG_BASE64, base64.b64encode(JPEG).decode()], "names": ["a", "b"]}},
     ["a", "b"]),
]


@pytest.mark.parametrize(("request_arguments", "expected_names"),
                         [case[1:] for case in INPUT_FORMS], ids=[case[0] for case in INPUT_FORMS])
def test_predict_accepts_every_input_form(client, openapi_spec, request_arguments, expected_names):
    response = client.post("/predict", **request_arguments)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    validate_against_spec(openapi_spec, "PredictResponse", body)
    assert [view["name"] for view in body["images"]] == expected_names
    assert body["study"]["n_images"] == len(expected_names)


def test_predict_study_values_agree_with_its_views(client):
    body = client.post("/predict", data=multipart(("a.png", PNG), ("b.png", make_radiograph(seed=7)))).get_json()
    views = body["images"]
    study = body["study"]
    mean_scores = np.mean([[view["body_part_scores"][part] for part in sorted(view["body_part_scores"])]
                           for view in views], axis=0)
    assert study["body_part"] == sorted(views[0]["body_part_scores"])[int(np.argmax(mean_scores))]
    assert study["body_part_confidence"] == pytest.approx(float(np.max(mean_scores)), abs=1e-5)
    assert study["abnormality"] == pytest.approx(np.mean([view["abnormality"] for view in views]), abs=1e-5)
    assert study["label"] == ("abnormal" if study["abnormality"] >= study["threshold"] else "normal")
    for view in views:
        assert sum(view["body_part_scores"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("option_source", ["form", "query", "json"])
def test_predict_reads_options_from_form_query_and_json(client, option_source):
    options = {"body_part": "wrist", "aggregation": "max"}
    views = (("a.png", PNG), ("b.png", make_radiograph(seed=9)))
    if option_source == "form":
        response = client.post("/predict", data=multipart(*views, **options))
    elif option_source == "query":
        response = client.post("/predict", data=multipart(*views), query_string=options)
    else:
        response = client.post("/predict", json={"images": [base64.b64encode(data).decode() for _, data in views],
                                                 **options})
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["study"]["body_part"] == "XR_WRIST"
    assert body["study"]["aggregation"] == "max"
    assert body["models"]["expert"].startswith("XR_WRIST")
    assert body["study"]["abnormality"] == pytest.approx(max(view["abnormality"] for view in body["images"]),
                                                         abs=1e-6)


@pytest.mark.parametrize(("sent_name", "echoed_name"), [
    ("<img src=x onerror=alert(1)>.png", "<img src=x onerror=alert(1)>.png"),
    ("../../etc/passwd", "passwd"),
    ("study 1/view 2/lateral.png", "lateral.png"),
    ("tab\there.png", "tab\\x09here.png"),
    # A right-to-left override would display "evil\u202egnp.exe" as "evilexe.png": it is shown escaped.
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
    ("zero\u200bwidth\u2066.png", "zero\\u200bwidth\\u2066.png"),
    ("line\u2028break.png", "line\\u2028break.png"),
])
def test_predict_echoes_names_as_plain_text(client, sent_name, echoed_name):
    response = client.post("/predict", data=multipart((sent_name, PNG)))
    assert response.status_code == 200
    assert response.get_json()["images"][0]["name"] == echoed_name
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_index_serves_the_predict_page_without_external_assets(client):
    response = client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert 'src="/static/predict.js"' in page and 'href="/static/predict.css"' in page
    assert "http://" not in page and "https://" not in page
    for asset in ("/static/predict.js", "/static/predict.css"):
        assert client.get(asset).status_code == 200


def test_uploads_stay_in_memory_even_when_large(app):
    from flask import request

    # Werkzeug spools uploads over 500 KB to a temporary file on disk by default.
    upload = {"image": (io.BytesIO(os.urandom(700_000)), "large.png")}
    with app.test_request_context("/predict", method="POST", data=upload):
        assert isinstance(request.files["image"].stream, io.BytesIO)
        assert len(request.files["image"].read()) == 700_000


def test_health_ready_and_models_endpoints(client, openapi_spec, tiny_repository):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}
    models = client.get("/models")
    body = models.get_json()
    validate_against_spec(openapi_spec, "Models", body)
    assert body["repository"] == tiny_repository.name
    assert str(tiny_repository) not in models.get_data(as_text=True)
    assert body["body_parts"][0] == "XR_ELBOW" and len(body["models"]) == 8


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    text = client.get("/metrics").get_data(as_text=True)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_count_requests_batches_and_queues(client):
    predict_ok = ("triage_http_requests_total", (("endpoint", "/predict"), ("method", "POST"), ("status", "200")))
    router_batches = ("triage_batch_size_count", (("model", "router"),))
    before = scrape(client)
    client.post("/predict", data=multipart(("a.png", PNG), ("b.png", PNG)))
    client.post("/predict", data=b"not an image", content_type="image/png")
    after = scrape(client)
    assert after[predict_ok] - before.get(predict_ok, 0.0) == 1.0
    failed = ("triage_http_requests_total", (("endpoint", "/predict"), ("method", "POST"), ("status", "415")))
    assert after[failed] - before.get(failed, 0.0) == 1.0
    assert after[router_batches] - before[router_batches] == 1.0
    assert after[("triage_batch_size_sum", (("model", "router"),))] - \
        before[("triage_batch_size_sum", (("model", "router"),))] == 2.0
    router_seconds = ("triage_batch_duration_seconds_count", (("model", "router"),))
    assert after[router_seconds] - before[router_seconds] == 1.0
    assert after[("triage_batch_duration_seconds_sum", (("model", "router"),))] > \
        before[("triage_batch_duration_seconds_sum", (("model", "router"),))]
    assert after[("triage_queue_depth", (("model", "router"),))] == 0.0
    latency_count = ("triage_http_request_duration_seconds_count", (("endpoint", "/predict"),))
    assert after[latency_count] - before[latency_count] == 2.0


def test_environment_variables_configure_the_app(tiny_repository, monkeypatch):
    from web.config import read_environment

    monkeypatch.setenv("TRIAGE_MODELS", str(tiny_repository))
    monkeypatch.setenv("TRIAGE_MAX_VIEWS", "7")
    monkeypatch.setenv("TRIAGE_LOAD_IN_BACKGROUND", "no")
    assert read_environment() == {"MODELS_DIR": str(tiny_repository), "MAX_VIEWS": 7, "LOAD_IN_BACKGROUND": False}
    monkeypatch.setenv("TRIAGE_JIT_COMPILE", "on")
    monkeypatch.setenv("TRIAGE_INTRA_OP_THREADS", "2")
    assert read_environment()["JIT_COMPILE"] is True and read_environment()["INTRA_OP_THREADS"] == 2
    monkeypatch.setenv("TRIAGE_MAX_VIEWS", "many")
    with pytest.raises(ValueError, match="TRIAGE_MAX_VIEWS"):
        read_environment()


@pytest.mark.parametrize(("setting", "message"), [
    ({"INTER_OP_THREADS": -1}, "INTER_OP_THREADS=-1 must be an integer >= 0"),
    ({"BACKEND": "torch"}, "BACKEND='torch' must be one of tensorflow, onnx"),
])
def test_bad_speed_setting_is_refused_with_the_key_named(tiny_repository, setting, message):
    from app import create_app

    with pytest.raises(ValueError, match=message):
        create_app({"MODELS_DIR": str(tiny_repository), **setting})


def test_background_loading_answers_healthz_at_once_and_readyz_when_loaded(tiny_repository):
    from app import create_app

    flask_app = create_app({"MODELS_DIR": str(tiny_repository), "LOAD_IN_BACKGROUND": True})
    client = flask_app.test_client()
    assert client.get("/healthz").status_code == 200
    early = client.get("/readyz")
    assert early.status_code == 503 and early.headers["Retry-After"] == "5"
    assert early.get_json()["error"]["code"] == "not_ready"
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "models did not load within 120 s"
        time.sleep(0.2)
    assert client.post("/predict", data=PNG, content_type="image/png").status_code == 200
    flask_app.extensions["pipeline_loader"].close()


def test_importing_app_loads_neither_tensorflow_nor_models():
    code = "import sys, app; assert 'tensorflow' not in sys.modules and 'classifiers' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_python_app_py_exits_with_one_line_when_the_repository_fails(tmp_path):
    result = subprocess.run([sys.executable, "app.py", "--models", str(tmp_path / "missing")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "missing" in last_line
    assert "Traceback" not in result.stderr
