"""POST /predict with explain=true: images[].explanation from the form, the query string or JSON."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from tests.support.helpers import make_radiograph, validate_against_spec

WIDE = make_radiograph(width=180, height=120, seed=3)
TALL = make_radiograph(width=96, height=128, seed=4)


def _views() -> dict:
    return {"image": [(io.BytesIO(WIDE), "wide.png"), (io.BytesIO(TALL), "tall.png")]}


@pytest.mark.parametrize("source", ["form", "query", "json"])
def test_explain_true_adds_an_overlay_and_peak_per_view(client, openapi_spec, source):
    if source == "form":
        response = client.post("/predict", data={**_views(), "explain": "true"})
    elif source == "query":
        response = client.post("/predict", data=_views(), query_string={"explain": "1"})
    else:
        response = client.post("/predict", json={"images": [base64.b64encode(WIDE).decode(),
                                                            base64.b64encode(TALL).decode()],
                                                 "names": ["wide.png", "tall.png"], "explain": True})
    body = response.get_json()
    assert response.status_code == 200, body
    validate_against_spec(openapi_spec, "PredictResponse", body)
    for view, size in zip(body["images"], [(180, 120), (96, 128)], strict=True):
        explanation = view["explanation"]
        x, y = explanation["peak"]
        assert 0 <= x < size[0] and 0 <= y < size[1]
        header, data = explanation["heatmap"].split(",", 1)
        assert header == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as overlay:
            assert overlay.format == "PNG" and overlay.size == size
    assert body["timing_ms"]["explain"] > 0


@pytest.mark.parametrize("value", [None, "false", "0"])
def test_without_explain_true_no_view_has_an_explanation(client, value):
    data = _views() if value is None else {**_views(), "explain": value}
    body = client.post("/predict", data=data).get_json()
    assert [("explanation" in view) for view in body["images"]] == [False, False]
    assert "explain" not in body["timing_ms"]


def test_a_bad_explain_value_is_422_naming_the_field(client):
    response = client.post("/predict", data={**_views(), "explain": "perhaps"})
    assert response.status_code == 422
    assert response.get_json()["error"]["message"].startswith("explain:")


@pytest.fixture(scope="module")
def wrong_layer_client(tmp_path_factory):
    """A service whose manifest names a layer the experts do not have in explanation_layers."""
    from app import create_app
    from tests.conftest import TEST_LIMITS
    from tests.support.model_factory import write_tiny_repository

    folder = write_tiny_repository(tmp_path_factory.mktemp("wrong_layer"))
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["experts"].values():
        entry["explanation_layers"] = "no_such_layer"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(folder), **TEST_LIMITS})
    yield flask_app.test_client()
    flask_app.extensions["pipeline_loader"].close()


def test_a_wrong_explanation_layer_is_a_500_saying_what_to_fix_not_a_503(wrong_layer_client, openapi_spec):
    response = wrong_layer_client.post("/predict", data={**_views(), "explain": "true"})
    body = response.get_json()
    assert response.status_code == 500, body
    validate_against_spec(openapi_spec, "Error", body)
    assert body["error"]["code"] == "explanation_unavailable"
    assert "Retry-After" not in response.headers
    message = body["error"]["message"]
    assert "'no_such_layer'" in message and "explanation_layers in manifest.json" in message
    assert "4-D layers are: " in message
    without = wrong_layer_client.post("/predict", data=_views())
    assert without.status_code == 200 and wrong_layer_client.get("/readyz").status_code == 200
