"""API keys: protected endpoints need a valid Bearer key, probes stay open, keys never reach a log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.support.helpers import make_radiograph
from web.access import identify_caller, parse_api_keys
from web.audit import hash_study_uid
from web.gunicorn_hooks import binds_beyond_loopback, open_service_warning

PNG = make_radiograph(seed=31)
RIS_KEY = "ris-0123456789abcdef-secret"
READER_KEY = "reader-fedcba9876543210-secret"


@pytest.fixture(scope="module")
def keyed_app(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """The service with two keys (one from the environment form, one from a key file) and a file audit log."""
    from app import create_app

    folder = tmp_path_factory.mktemp("keyed")
    key_file = folder / "keys.txt"
    key_file.write_text(f"# readers\nreader:{READER_KEY}\n")
    flask_app = create_app({"MODELS_DIR": str(tiny_repository), "WARMUP": False, "API_KEYS": f"ris:{RIS_KEY}",
                            "API_KEY_FILE": str(key_file), "AUDIT_LOG": str(folder / "audit.log")})
    yield flask_app
    flask_app.extensions["pipeline_loader"].close()


def audit_lines(flask_app) -> list[dict]:
    """The audit records written so far."""
    path = Path(flask_app.config["AUDIT_LOG"])
    return [json.loads(line.removeprefix("audit ")) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("method", "path"), [("POST", "/predict"), ("GET", "/models"), ("GET", "/metrics")])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key-wrong-key-wrong", f"Basic {RIS_KEY}",
                                           "Bearer ", f"Bearer {RIS_KEY}x"])
def test_protected_endpoints_answer_401_without_a_valid_key(keyed_app, method, path, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = keyed_app.test_client().open(path, method=method, data=PNG, content_type="image/png",
                                            headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert "Authorization: Bearer" in response.get_json()["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert RIS_KEY not in response.get_data(as_text=True)


def test_probes_and_page_stay_open_and_keys_let_callers_in(keyed_app, caplog):
    client = keyed_app.test_client()
    for path in ("/healthz", "/readyz", "/", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    with caplog.at_level(logging.DEBUG):
        for key in (RIS_KEY, READER_KEY):
            response = client.post("/predict?name=secret-name.png", data=PNG, content_type="image/png",
                                   headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
        models = client.get("/models", headers={"Authorization": f"bearer {READER_KEY}"})
        assert models.status_code == 200 and "versions" in models.get_json()
        assert client.get("/metrics", headers={"Authorization": f"Bearer {RIS_KEY}"}).status_code == 200
    records = audit_lines(keyed_app)
    assert [record["key_id"] for record in records][-2:] == ["ris", "reader"]
    audit_text = Path(keyed_app.config["AUDIT_LOG"]).read_text()
    for secret in (RIS_KEY, READER_KEY, "secret-name.png"):
        assert secret not in audit_text and secret not in caplog.text


def test_audit_line_holds_the_prediction_and_nothing_else(keyed_app):
    client = keyed_app.test_client()
    response = client.post("/predict?name=frontal-of-patient.png", data=PNG, content_type="image/png",
                           headers={"Authorization": f"Bearer {RIS_KEY}"})
    study = response.get_json()["study"]
    record = audit_lines(keyed_app)[-1]
    assert set(record) == {"event", "time", "key_id", "views", "body_part", "abnormality", "label", "latency_ms",
                           "study_uid_hash"}
    assert (record["key_id"], record["views"], record["body_part"], record["label"]) == (
        "ris", 1, study["body_part"], study["label"])
    assert record["abnormality"] == pytest.approx(study["abnormality"], abs=1e-4)
    # How long it took is bench's figure; the record only has to carry it as a number.
    assert isinstance(record["latency_ms"], int | float) and record["latency_ms"] >= 0
    assert record["study_uid_hash"] is None  # set once DICOM views carry a StudyInstanceUID


def test_without_keys_every_endpoint_is_open(client):
    assert client.get("/models").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(("text", "message"), [
    ("ris:short", "shorter than 16"),
    (f"a:{RIS_KEY},a:{READER_KEY}", "used twice"),
])
def test_bad_key_settings_are_refused_without_showing_the_key(text, message):
    with pytest.raises(ValueError, match=message) as raised:
        parse_api_keys(text, "TRIAGE_API_KEYS")
    assert RIS_KEY not in str(raised.value) and READER_KEY not in str(raised.value)


def test_key_parsing_and_matching():
    keys = parse_api_keys(f"ris:{RIS_KEY}, {READER_KEY}  # a bare key gets an id from its hash\n\n", "test")
    bare_id = next(key_id for key_id in keys if key_id != "ris")
    assert bare_id.startswith("key-") and len(bare_id) == 12 and READER_KEY not in bare_id
    assert identify_caller(f"Bearer {READER_KEY}", keys) == bare_id
    assert identify_caller(f"Bearer  {RIS_KEY} ", keys) == "ris"
    assert identify_caller(RIS_KEY, keys) is None and identify_caller(None, keys) is None


def test_study_uid_hash_is_keyed_and_one_way():
    uid = "1.2.826.0.1.3680043.8.498.12345"
    first = hash_study_uid(uid, b"secret one")
    assert first == hash_study_uid(uid, b"secret one") and len(first) == 32
    assert first != hash_study_uid(uid, b"secret two") and uid not in first


@pytest.mark.parametrize(("addresses", "environment", "warns"), [
    (["127.0.0.1:8000"], {}, False),
    (["[::1]:8000", "localhost:8000", "unix:/run/triage.sock"], {}, False),
    (["0.0.0.0:8000"], {}, True),
    (["127.0.0.1:8000", "10.1.2.3:8000"], {}, True),
    (["0.0.0.0:8000"], {"TRIAGE_API_KEYS": f"ris:{RIS_KEY}"}, False),
    (["[::]:8000"], {"TRIAGE_API_KEY_FILE": "/etc/triage/keys"}, False),
])
def test_gunicorn_warns_when_open_beyond_loopback_without_keys(addresses, environment, warns):
    warning = open_service_warning(addresses, environment)
    assert (warning is not None) == warns
    if warns:
        assert "WITHOUT API keys" in warning and binds_beyond_loopback(addresses)[0] in warning
