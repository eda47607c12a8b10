"""Two real gunicorn replicas behind a real nginx (deploy/nginx.conf): a replica killed under load loses nothing."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.launch import Server, encode_multipart, free_port, http_status, running_gunicorn, running_nginx
from tests.support.held_repository import HeldRepository
from tests.support.helpers import make_radiograph, open_chunked_upload, read_answer, send_chunks
from tests.support.timing import WAIT_LIMIT_S
from tests.test_gunicorn import raw_exchange

NUM_REQUESTS = 120
CLIENTS = 4
STUDY = [("frontal.png", make_radiograph(seed=31)), ("lateral.png", make_radiograph(seed=32))]


def _post_study(url: str) -> tuple[int, dict, dict[str, str]]:
    """POST the two-view study; return (status, JSON body, headers)."""
    body, content_type = encode_multipart(STUDY)
    request = urllib.request.Request(url + "/predict", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def _kill_replica(server: Server) -> None:
    """SIGKILL the replica's workers and master at once, as a crashed machine or the OOM killer would."""
    for pid in [*server.worker_pids(), server.process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(timeout=10)


def _upstreams_answering(access_log: Path) -> list[tuple[str, str]]:
    """(upstream address, status) of each proxied /predict in nginx's access log."""
    entries = []
    for line in access_log.read_text().splitlines():
        if '"POST /predict"' in line:
            fields = dict(part.split("=", 1) for part in line.split() if part.startswith("upstream"))
            entries.append((fields["upstream"], line.split('"')[2].split()[0]))
    return entries


def _requests_while_loading(url: str, replica: Server, access_log: Path, limit_s: float = WAIT_LIMIT_S) -> list[int]:
    """Send studies one by one until nginx's log shows a 503 of `replica` retried with a 200 elsewhere.

    Returns the statuses the client got; empty if the replica became ready (or exited) before that was seen.
    """
    statuses: list[int] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and replica.process.poll() is None:
        statuses.append(_post_study(url)[0])
        if any(f"upstream={replica.url.removeprefix('http://')}, " in line and "upstream_status=503, 200" in line
               for line in access_log.read_text().splitlines()):
            return statuses
        if http_status(replica.url + "/readyz") == 200:
            return []
        time.sleep(0.05)
    return []


def test_a_replica_killed_under_load_loses_no_request_and_comes_back(onnx_repository: Path, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        # Each replica sized to carry the whole load alone (8 threads: 4 predictions at once, 4 clients).
        replicas = [stack.enter_context(running_gunicorn(onnx_repository, tmp_path / f"replica{index}.log",
                                                         {"TRIAGE_AUDIT_LOG": ""}, threads=8, port=port))
                    for index, port in enumerate(ports)]
        for replica in replicas:
            replica.wait_until_ready()
        nginx = stack.enter_context(running_nginx([f"127.0.0.1:{port}" for port in ports], tmp_path / "nginx"))
        status, expected, _ = _post_study(nginx.url)
        assert status == 200

        outcomes: list[tuple[int, dict, dict[str, str]]] = []
        lock = threading.Lock()

        def client(count: int) -> None:
            for _ in range(count):
                outcome = _post_study(nginx.url)
                with lock:
                    outcomes.append(outcome)
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(NUM_REQUESTS // CLIENTS,)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        while len(outcomes) < NUM_REQUESTS // 3:
            time.sleep(0.01)
        _kill_replica(replicas[0])
        for thread in threads:
            thread.join(timeout=300)

        assert len(outcomes) == NUM_REQUESTS
        statuses = [status for status, _, _ in outcomes]
        assert not {502, 504} & set(statuses), statuses
        shed = [outcome for outcome in outcomes if outcome[0] == 503]
        assert all("Retry-After" in headers for _, _, headers in shed)
        answered = [body for status, body, _ in outcomes if status == 200]
        assert len(answered) + len(shed) == NUM_REQUESTS and len(answered) >= NUM_REQUESTS * 0.9
        for body in answered:  # the same study gets the same answer from either replica
            assert body["study"]["abnormality"] == pytest.approx(expected["study"]["abnormality"], abs=1e-6)

        # The killed replica comes back on its port and takes traffic again. Its models load only when the test
        # lets them (a held repository), however fast this machine loads them.
        held = HeldRepository(onnx_repository, tmp_path / "held-repository")
        restarted = stack.enter_context(running_gunicorn(held.path, tmp_path / "replica0-again.log",
                                                         {"TRIAGE_AUDIT_LOG": ""}, threads=8, port=ports[0]))
        # While it loads its models it answers 503 not_ready: nginx sends those POSTs on to the live replica.
        while_loading = _requests_while_loading(nginx.url, restarted, tmp_path / "nginx" / "access.log")
        assert while_loading and set(while_loading) == {200}, while_loading
        held.release()
        restarted.wait_until_ready()
        before = len(_upstreams_answering(tmp_path / "nginx" / "access.log"))
        assert all(_post_study(nginx.url)[0] == 200 for _ in range(12))
        recent = _upstreams_answering(tmp_path / "nginx" / "access.log")[before:]
        assert (f"127.0.0.1:{ports[0]}", "200") in recent, recent


def test_nginx_refuses_a_body_over_the_service_limit_and_never_writes_one_to_disk(replica_behind_nginx,
                                                                                  tmp_path: Path) -> None:
    _, nginx = replica_behind_nginx
    request = urllib.request.Request(nginx.url + "/predict", data=b"\x89PNG" + bytes(5_000_000), method="POST",
                                     headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code == 413 and raised.value.headers["Content-Type"] == "application/json"
    assert json.load(raised.value)["error"]["code"] == "payload_too_large"

    # Under the limit, the body goes to the replica (which judges it) from memory, not from a temporary file.
    request = urllib.request.Request(nginx.url + "/predict", data=b"\x89PNG" + bytes(3_000_000), method="POST",
                                     headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code in (400, 415) and "error" in json.load(raised.value)
    error_log = (tmp_path / "nginx" / "error.log").read_text()
    assert "buffered to a temporary file" not in error_log
    assert '"POST /predict" 4' in (tmp_path / "nginx" / "access.log").read_text()  # the replica did answer


@pytest.fixture(scope="module")
def limited_replica(onnx_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """One replica (4 MiB request limit) for the module's tests that need one behind a fresh nginx."""
    with running_gunicorn(onnx_repository, tmp_path_factory.mktemp("replica") / "replica.log",
                          {"TRIAGE_AUDIT_LOG": "", "TRIAGE_MAX_REQUEST_BYTES": str(4 << 20)}) as replica:
        replica.wait_until_ready()
        yield replica


@pytest.fixture
def replica_behind_nginx(limited_replica, tmp_path: Path):
    """The module's replica and an nginx of this test's own in front, with the same limit: (replica, nginx)."""
    with running_nginx([limited_replica.url.removeprefix("http://")], tmp_path / "nginx", max_body="4m") as nginx:
        yield limited_replica, nginx


def _json_error(status: int, headers: dict[str, str], body: bytes) -> dict:
    """The error object of an answer in the API's JSON shape (checks the content type and status field)."""
    assert headers["content-type"] == "application/json", (status, body[:200])
    error = json.loads(body)["error"]
    assert error["status"] == status and error["message"]
    return error


def test_chunked_uploads_are_streamed_to_the_replica_and_never_written_to_disk(replica_behind_nginx,
                                                                             tmp_path: Path) -> None:
    _, nginx = replica_behind_nginx
    temp_folder = tmp_path / "nginx" / "client_body"
    cases = [  # (body, chunk size, expected status): a study, bodies at the limit in big and tiny chunks, over it
        (make_radiograph(seed=33), 1000, 200),
        (b"\x89PNG" + bytes((4 << 20) - 4), 65536, 415),  # exactly the limit: the replica reads it (not a PNG)
        (b"\x89PNG" + bytes((4 << 20) - 4), 7, 415),
        (b"\x89PNG" + bytes(6 << 20), 65536, 413),
        (b"\x89PNG" + bytes(100 << 20), 1 << 20, 413),
    ]
    for body, chunk_size, expected in cases:
        with open_chunked_upload(nginx.url) as connection:
            try:
                send_chunks(connection, body, chunk_size)
            except OSError:  # nginx answered 413 and closed while the client was still sending
                pass
            assert not any(temp_folder.rglob("*")), "a request body was written to disk"
            status, headers, answer = read_answer(connection)
        assert status == expected, (len(body), chunk_size, answer[:200])
        if status != 200:
            code = _json_error(status, headers, answer)["code"]
            assert code == {413: "payload_too_large", 415: "unsupported_media_type"}[status]
    assert not any(temp_folder.rglob("*"))
    assert "buffered to a temporary file" not in (tmp_path / "nginx" / "error.log").read_text()
    assert (tmp_path / "nginx" / "access.log").read_text().count('"POST /predict" 415') == 2  # the replica answered


def test_a_replica_holding_its_max_conns_gets_no_more_and_nginx_refuses_at_once(limited_replica,
                                                                                tmp_path: Path) -> None:
    # max_conns=1: one request in progress at the replica (a chunked upload streamed to it, held half-sent) is
    # all it is given. A study sent meanwhile never waits in gunicorn's queue: nginx answers 503 itself.
    with running_nginx([limited_replica.url.removeprefix("http://")], tmp_path / "nginx", max_body="4m",
                       max_conns=1) as nginx:
        assert _post_study(nginx.url)[0] == 200
        with open_chunked_upload(nginx.url) as held:
            send_chunks(held, make_radiograph(seed=34)[:1000], 500, last=False)
            deadline = time.monotonic() + WAIT_LIMIT_S
            while (outcome := _post_study(nginx.url))[0] == 200 and time.monotonic() < deadline:
                time.sleep(0.05)  # until nginx has passed the held upload on to the replica
            status, body, headers = outcome
            assert status == 503 and body["error"]["code"] == "no_replica" and headers["Retry-After"] == "5"
            assert headers["Content-Type"] == "application/json"
            # The probes have their own connections to the replica: a full replica still answers them.
            assert http_status(nginx.url + "/healthz") == 200 and http_status(nginx.url + "/readyz") == 200
            send_chunks(held, make_radiograph(seed=34)[1000:], 500)
            assert read_answer(held)[0] == 200
        assert _post_study(nginx.url)[0] == 200  # the slot is free again
    assert "no live upstreams" in (tmp_path / "nginx" / "error.log").read_text()


def test_nginx_answers_its_own_errors_in_the_json_shape(replica_behind_nginx, tmp_path: Path) -> None:
    _, nginx = replica_behind_nginx
    with open_chunked_upload(nginx.url) as connection:  # a chunk size that is not hexadecimal
        connection.sendall(b"zz\r\nxx\r\n0\r\n\r\n")
        status, headers, body = read_answer(connection)
    assert status == 400 and _json_error(status, headers, body)["code"] == "bad_request"
    status, headers, body = raw_exchange(nginx.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert status == 400 and _json_error(status, headers, body)["code"] == "bad_request"
    # No replica answering (nothing listens on its port): nginx's 502 becomes the API's 503 no_replica.
    with running_nginx([f"127.0.0.1:{free_port()}"], tmp_path / "nginx-alone") as alone:
        status, headers, body = raw_exchange(alone.url, b"GET /models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 503 and _json_error(status, headers, body)["code"] == "no_replica"
    assert headers["retry-after"] == "5"
    # 500 (nginx's own failure) and 504 cannot be caused from outside: the configuration maps them too.
    config = (tmp_path / "nginx" / "nginx.conf").read_text()
    assert "error_page 500 @internal_error;" in config and "error_page 502 504 =503 @no_replica;" in config
    assert '"code": "internal_error"' in config.split("location @internal_error", 1)[1].split("}", 1)[0] + "}"


def test_slow_connections_over_the_per_address_limit_get_429_and_leave_others_served(replica_behind_nginx) -> None:
    _, nginx = replica_behind_nginx
    host, port = nginx.url.removeprefix("http://").split(":")
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n\x89PNG"
    slow = []
    try:
        for _ in range(SLOW_CONNECTIONS):  # from 127.0.0.2, each announcing a body it never finishes
            connection = socket.create_connection((host, int(port)), timeout=30, source_address=("127.0.0.2", 0))
            connection.sendall(head)
            slow.append(connection)
        refused = _answers_within(slow, SLOW_CONNECTIONS - PER_ADDRESS_CONNECTIONS)
        assert len(refused) == SLOW_CONNECTIONS - PER_ADDRESS_CONNECTIONS
        for status, headers, body in refused:
            assert status == 429 and _json_error(status, headers, body)["code"] == "too_many_requests"
            assert headers["retry-after"] == "1"
        assert _post_study(nginx.url)[0] == 200  # another address is served
        probe = http.client.HTTPConnection(host, int(port), timeout=10, source_address=("127.0.0.2", 0))
        probe.request("GET", "/healthz")
        assert probe.getresponse().status == 200  # the probes are never limited, even for that address
        probe.close()
    finally:
        for connection in slow:
            connection.close()


SLOW_CONNECTIONS = 40
PER_ADDRESS_CONNECTIONS = 16  # limit_conn per_address in deploy/nginx.conf


def _answers_within(connections: list[socket.socket], expected: int, limit_s: float = 30.0) -> list[tuple]:
    """Read the answers that arrive on `connections` until `expected` came or `limit_s` passed."""
    answers: list[tuple] = []
    waiting = list(connections)
    deadline = time.monotonic() + limit_s
    while len(answers) < expected and time.monotonic() < deadline:
        ready, _, _ = select.select(waiting, [], [], 0.5)
        for connection in ready:
            answers.append(read_answer(connection))
            waiting.remove(connection)
    return answers
