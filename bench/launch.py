"""The real service for tests and benchmarks: gunicorn replicas, and nginx in front, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from web.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_status(url: str, timeout_s: float = 5.0) -> int | None:
    """HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def encode_multipart(named_images: Sequence[tuple[str, bytes]],
                     fields: Mapping[str, str] | None = None) -> tuple[bytes, str]:
    """One `image` part per (file name, bytes) and the form fields; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    chunks = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
              for key, value in (fields or {}).items()]
    chunks += [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
               f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
               for name, data in named_images]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


@dataclass
class Server:
    """A running gunicorn: base URL, master process, and the file its output goes to."""

    url: str
    process: subprocess.Popen
    log_path: Path
    ready_seconds: float | None = None  # set by wait_until_ready

    def worker_pids(self) -> list[int]:
        """Process ids of the gunicorn workers (children of the master)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def wait_until_ready(self, limit_s: float = 180.0) -> float:
        """Wait for /readyz 200; return the seconds waited, or raise with the log's tail."""
        started = time.monotonic()
        while http_status(self.url + "/readyz") != 200:
            if self.process.poll() is not None or time.monotonic() - started > limit_s:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"gunicorn not ready within {limit_s:.0f} s (exit {self.process.poll()});"
                                   f" log tail:\n{tail}")
            time.sleep(0.25)
        self.ready_seconds = time.monotonic() - started
        return self.ready_seconds

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (gunicorn drains), then SIGKILL if it has not exited in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def running_gunicorn(models_dir: Path, log_path: Path, environment: Mapping[str, str] | None = None,
                     workers: int = 1, threads: int = 4, port: int | None = None,
                     code: Path = ROOT) -> Iterator[Server]:
    """Start gunicorn over `models_dir` (not yet ready when yielded: see Server.wait_until_ready); always stopped.

    `code`: the checkout whose service runs (another one for a before/after comparison).
    """
    address = f"127.0.0.1:{port or free_port()}"
    variables = {**os.environ, "PYTHONPATH": str(code), "TRIAGE_BIND": address, "TRIAGE_MODELS": str(models_dir),
                 "TRIAGE_WORKERS": str(workers), "TRIAGE_THREADS": str(threads), **(environment or {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                                   cwd=code, env=variables, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(f"http://{address}", process, log_path)
    try:
        yield server
    finally:
        server.stop()


NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"


def render_nginx_config(listen: str, upstreams: Sequence[str], run_dir: Path, max_body: str = "64m",
                        user: str = "root", max_conns: int = DEFAULTS["MAX_IN_FLIGHT"]) -> str:
    """deploy/nginx.conf with its ${...} names filled in, as envsubst would (nginx's own $names kept).

    `max_conns`: requests each replica is given at once (its workers x in-flight predictions).
    """
    servers = " ".join(f"server {address} max_fails=0 max_conns={max_conns};" for address in upstreams)
    values = {"LISTEN": listen, "UPSTREAM_SERVERS": servers, "RUN_DIR": str(run_dir), "MAX_BODY": max_body,
              "NGINX_USER": user}
    return string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(values)


@contextmanager
def running_nginx(upstreams: Sequence[str], run_dir: Path, max_body: str = "64m",
                  port: int | None = None, max_conns: int = DEFAULTS["MAX_IN_FLIGHT"]) -> Iterator[Server]:
    """Debian's nginx with deploy/nginx.conf in front of `upstreams` (host:port), on a free loopback port."""
    run_dir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{port or free_port()}"
    config = run_dir / "nginx.conf"
    config.write_text(render_nginx_config(address, upstreams, run_dir, max_body, max_conns=max_conns))
    log_path = run_dir / "nginx.out"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(config), "-p", str(run_dir),
                                    "-g", "daemon off;"], stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(f"http://{address}", process, log_path)
    try:
        deadline = time.monotonic() + 20
        while http_status(server.url + "/nginx-not-a-path") is None:
            if process.poll() is not None or time.monotonic() > deadline:
                errors = (run_dir / "error.log").read_text(errors="replace") if (run_dir / "error.log").exists() else ""
                raise RuntimeError(f"nginx did not start: {log_path.read_text(errors='replace')} {errors}"[-3000:])
            time.sleep(0.1)
        yield server
    finally:
        server.stop(timeout_s=10)
