"""Production serving: real gunicorn with gunicorn.conf.py on a free loopback port, a 2-view study over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.launch import Server, encode_multipart, free_port, http_status, running_gunicorn
from tests.support.helpers import make_radiograph, open_chunked_upload, read_answer, send_chunks

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 180


@pytest.fixture
def gunicorn_server(onnx_repository, tmp_path) -> Iterator[Server]:
    """gunicorn over the tiny repository's ONNX export (ready in seconds), no API keys, ready."""
    with running_gunicorn(onnx_repository, tmp_path / "gunicorn.log") as server:
        server.wait_until_ready(STARTUP_TIMEOUT_S)
        yield server


def raw_exchange(url: str, request_bytes: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the server, read the whole answer: (status, headers in lower case, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request_bytes)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in header_lines}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def tensorflow_server(tiny_repository, tmp_path) -> Iterator[Server]:
    """gunicorn over the tiny Keras repository: TensorFlow built in the worker after the fork, ready."""
    with running_gunicorn(tiny_repository, tmp_path / "gunicorn.log") as server:
        server.wait_until_ready(STARTUP_TIMEOUT_S)
        yield server


def test_gunicorn_serves_a_two_view_study(tensorflow_server):
    url, process, log_path = tensorflow_server.url, tensorflow_server.process, tensorflow_server.log_path
    assert http_status(url + "/healthz") == 200

    body, content_type = encode_multipart([("frontal.png", make_radiograph(seed=21)),
                                           ("lateral.png", make_radiograph(seed=22))], {"aggregation": "max"})
    request = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": content_type},
                                     method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        result = json.load(response)
    assert [view["name"] for view in result["images"]] == ["frontal.png", "lateral.png"]
    assert result["study"]["n_images"] == 2
    assert result["study"]["abnormality"] == max(view["abnormality"] for view in result["images"])

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    output = log_path.read_text(errors="replace")
    access_lines = [line for line in output.splitlines() if '"POST /predict' in line]
    assert len(access_lines) == 1 and " 200 " in access_lines[0]
    assert "frontal.png" not in output  # file names and image bytes never reach the log
    audit = [json.loads(line.removeprefix("audit ")) for line in output.splitlines() if line.startswith("audit ")]
    assert [(record["views"], record["key_id"]) for record in audit] == [(2, "-")]
    assert audit[0]["abnormality"] == pytest.approx(result["study"]["abnormality"], abs=1e-4)


# gunicorn answers these itself, before Flask sees the request: (id, raw request, status, code).
GUNICORN_OWN_ERRORS = [
    ("long-url", b"GET /healthz?" + b"a" * 6000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    ("too-many-headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-Field-%d: v\r\n" % index for index in range(150)) + b"\r\n", 431,
     "request_header_fields_too_large"),
    ("garbage-request-line", b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request"),
]


def test_gunicorn_own_errors_use_the_json_error_shape(gunicorn_server):
    url = gunicorn_server.url
    for case_id, request_bytes, status, code in GUNICORN_OWN_ERRORS:
        answer_status, headers, body = raw_exchange(url, request_bytes)
        assert answer_status == status, case_id
        assert headers["content-type"] == "application/json", case_id
        assert int(headers["content-length"]) == len(body), case_id
        error = json.loads(body)["error"]
        assert error["status"] == status and error["code"] == code, case_id
        assert "<html" not in body.decode().lower()
    assert http_status(url + "/healthz") == 200  # and the worker keeps serving


def test_client_that_disconnects_mid_body_is_counted_as_such(gunicorn_server):
    url = gunicorn_server.url
    png = make_radiograph(seed=23)
    host, port = url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(png) + png[:200])
            connection.shutdown(socket.SHUT_WR)  # the client gives up half-way through its body
            connection.recv(65536)
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        metrics_text = response.read().decode()
    assert 'triage_http_requests_total{endpoint="/predict",method="POST",status="499"} 3.0' in metrics_text
    assert 'status="400"' not in metrics_text


def test_refused_request_with_a_large_body_gets_its_answer_not_a_reset(onnx_repository, tmp_path):
    key = "gunicorn-test-key-0123456789"
    with running_gunicorn(onnx_repository, tmp_path / "gunicorn.log", {"TRIAGE_API_KEYS": f"t:{key}"}) as server:
        server.wait_until_ready(STARTUP_TIMEOUT_S)
        url = server.url
        body = b"\x89PNG" + bytes(8_000_000)  # refused before the app reads it
        for _ in range(3):
            request = urllib.request.Request(url + "/predict", data=body, method="POST",
                                             headers={"Content-Type": "image/png"})
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(request, timeout=60)
            assert raised.value.code == 401
            assert json.load(raised.value)["error"]["code"] == "unauthorized"


def test_make_run_serves_with_gunicorn_on_host_port_and_models(onnx_repository, tmp_path):
    port = free_port()
    log_path = tmp_path / "make-run.log"
    command = ["make", "--no-print-directory", "-o", "install", "run", f"VENV={sys.prefix}", "HOST=127.0.0.1",
               f"PORT={port}", f"MODELS={onnx_repository}"]
    with log_path.open("wb") as log_file:  # its own session, so the stop below reaches make and gunicorn
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        server.wait_until_ready(STARTUP_TIMEOUT_S)
        with urllib.request.urlopen(server.url + "/models", timeout=30) as response:
            assert response.headers["Server"].startswith("gunicorn")
            assert json.load(response)["repository"] == onnx_repository.name
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    output = log_path.read_text(errors="replace")
    assert "Starting gunicorn" in output and "development server" not in output


def test_a_chunked_body_over_the_limit_gets_413_as_soon_as_it_passes_the_limit(onnx_repository, tmp_path):
    limit = 1 << 20
    with running_gunicorn(onnx_repository, tmp_path / "gunicorn.log",
                          {"TRIAGE_MAX_REQUEST_BYTES": str(limit), "TRIAGE_AUDIT_LOG": ""}) as server:
        server.wait_until_ready(STARTUP_TIMEOUT_S)
        with open_chunked_upload(server.url) as connection:
            # The limit and one chunk more, and then nothing: the answer must come without the rest of the body
            # (gunicorn reads a chunked body ahead by 1 KiB: the answer comes within that of the limit).
            send_chunks(connection, b"\x89PNG" + bytes(limit + 65536 - 4), last=False)
            status, headers, body = read_answer(connection)
        assert status == 413 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"] == {"status": 413, "code": "payload_too_large", "message": (
            f"the request is larger than the limit of {limit} bytes; send fewer or smaller images")}

        with open_chunked_upload(server.url) as connection:  # under the limit, a chunked study is served
            send_chunks(connection, make_radiograph(seed=24), chunk_size=1000)
            status, _, body = read_answer(connection)
        assert status == 200 and json.loads(body)["study"]["n_images"] == 1
        with open_chunked_upload(server.url, "application/json") as connection:  # JSON's body too
            send_chunks(connection, b'{"image": "' + bytes(limit + 65536) + b'"}', last=False)
            status, _, body = read_answer(connection)
        assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
