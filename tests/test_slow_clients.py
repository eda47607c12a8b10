"""50 slow-sending clients in front of nginx (deploy/nginx.conf) leave every normal request answered.

How much they cost the others (p99 quiet against loaded) is a figure: `python -m bench.slow_clients`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.launch import free_port, running_gunicorn, running_nginx
from bench.restarts import post_study
from bench.slow_clients import normal_request_latencies, slow_senders_trickling

SLOW_CLIENTS = 50
REQUESTS = 30


def test_fifty_slow_senders_leave_every_normal_request_answered_200(onnx_repository: Path, tmp_path: Path) -> None:
    port = free_port()
    with running_gunicorn(onnx_repository, tmp_path / "replica.log", {"TRIAGE_AUDIT_LOG": ""}, threads=8,
                          port=port) as replica, running_nginx([f"127.0.0.1:{port}"], tmp_path / "nginx") as nginx:
        replica.wait_until_ready()
        assert post_study(nginx.url) == "200"
        with slow_senders_trickling(nginx.url, SLOW_CLIENTS):
            latencies, errors = normal_request_latencies(nginx.url, REQUESTS)
    assert errors == [] and len(latencies) == REQUESTS


def test_slow_senders_say_what_they_need(capsys) -> None:
    from bench.slow_senders import main

    with pytest.raises(SystemExit) as exited:
        main(["127.0.0.1"])
    assert exited.value.code == 2 and "expected a URL such as http://127.0.0.1:8080" in capsys.readouterr().err
    assert main([f"http://127.0.0.1:{free_port()}", "--count", "1"]) == 1  # nothing listens there
    assert "cannot connect to" in capsys.readouterr().err


def test_latency_tool_refuses_impossible_counts(capsys) -> None:
    from bench.latency import main

    with pytest.raises(SystemExit) as exited:
        main(["http://127.0.0.1:1", "--requests", "2", "--clients", "3"])
    assert exited.value.code == 2 and "--clients between 1 and --requests" in capsys.readouterr().err
