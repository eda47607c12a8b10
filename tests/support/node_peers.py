"""dcmtk peers of the DICOM node for tests: storescp as destination, storescu/echoscu as senders, a test CA."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.errors

from bench.launch import free_port

LOOPBACK = "127.0.0.1"


@dataclass
class Storescp:
    """A running dcmtk storescp: its AE title, port and the folder it writes what it receives to."""

    ae_title: str
    port: int
    folder: Path
    process: subprocess.Popen

    def reports(self) -> list[pydicom.Dataset]:
        """Every SR received, each file read strictly (call once the senders are done: no file is half written)."""
        datasets = [pydicom.dcmread(path) for path in sorted(self.folder.iterdir()) if path.is_file()]
        return [dataset for dataset in datasets if dataset.Modality == "SR"]

    def complete_reports(self) -> list[pydicom.Dataset]:
        """The SRs received so far, for polling: a file storescp is still writing is left for a later poll."""
        datasets = []
        for path in sorted(self.folder.iterdir()):
            try:
                datasets.append(pydicom.dcmread(path))
            except (pydicom.errors.InvalidDicomError, EOFError, OSError):
                continue  # half written (storescp writes as the data arrives): complete by the next poll
        return [dataset for dataset in datasets if dataset.Modality == "SR"]

    def report_files(self) -> list[Path]:
        """The files of every SR received so far."""
        return [path for path in sorted(self.folder.iterdir()) if path.is_file() and path.name.startswith("SR")]


@contextmanager
def running_storescp(folder: Path, port: int | None = None, ae_title: str = "ARCHIVE",
                     tls: Sequence[str] = ()) -> Iterator[Storescp]:
    """Start storescp on a free loopback port (or `port`), wait until it answers C-ECHO, always stop it."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = (folder.parent / f"storescp-{port}.log").open("wb")
    process = subprocess.Popen(["storescp", "-aet", ae_title, "-od", str(folder), *tls, str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: echoscu(port, ae_title, tls=tls).returncode == 0 or process.poll() is not None, 20)
        assert process.poll() is None, f"storescp exited; see {log.name}"
        yield Storescp(ae_title, port, folder, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def echoscu(port: int, called: str = "TRIAGE", calling: str = "MODALITY",
            tls: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """One C-ECHO from dcmtk's echoscu."""
    return subprocess.run(["echoscu", "-aet", calling, "-aec", called, *tls, LOOPBACK, str(port)],
                          capture_output=True, text=True, timeout=60)


def storescu(port: int, files: Sequence[Path], called: str = "TRIAGE", calling: str = "MODALITY",
             tls: Sequence[str] = (), syntax: str = "-x=") -> subprocess.CompletedProcess:
    """Send files with dcmtk's storescu in one association, proposing `syntax` (its -x option) and uncompressed."""
    return subprocess.run(["storescu", "-aet", calling, "-aec", called, syntax, "--required", *tls, LOOPBACK,
                           str(port), *map(str, files)], capture_output=True, text=True, timeout=120)


def wait_until(condition: Callable[[], bool], limit_s: float, what: str = "condition") -> None:
    """Poll `condition` until true; TimeoutError after `limit_s` (a bound for a real process, not a timing test)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached within {limit_s} s")


def make_test_ca(folder: Path) -> dict[str, Path]:
    """A test CA and two certificates it signed (server and client, both for 127.0.0.1), with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.pem" for name in ("ca", "ca-key", "node", "node-key", "peer", "peer-key")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=triage test CA",
             "-keyout", paths["ca-key"], "-out", paths["ca"])
    extensions = folder / "extensions.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    for name in ("node", "peer"):
        request = folder / f"{name}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", paths[f"{name}-key"],
                 "-out", request)
        _openssl("x509", "-req", "-in", request, "-CA", paths["ca"], "-CAkey", paths["ca-key"], "-CAcreateserial",
                 "-days", "2", "-extfile", extensions, "-out", paths[name])
    return paths


def _openssl(*arguments: object) -> None:
    subprocess.run(["openssl", *map(str, arguments)], check=True, capture_output=True, timeout=60)


def dciodvfy_errors(path: Path) -> list[str]:
    """The Error lines dciodvfy (dicom3tools) reports for a DICOM file."""
    completed = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (completed.stdout + completed.stderr).splitlines() if line.startswith("Error")]
