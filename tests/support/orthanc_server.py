"""A real Orthanc for tests: Debian's /usr/sbin/Orthanc on free loopback ports, its storage in a temporary folder."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.launch import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian's orthanc-dicomweb
USERNAME, PASSWORD = "triage", "test-password-5181"


@dataclass
class Orthanc:
    """A running Orthanc: its URL, the test user, its process and log."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb plugin's base URL (QIDO-RS, WADO-RS and STOW-RS below it)."""
        return self.url + "/dicom-web"

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One authenticated request (tests' own access, independent of the worker's client)."""
        request = urllib.request.Request(self.url + path, data=body, method=method)
        token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        if body is not None:
            request.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def get(self, path: str):
        """GET a JSON resource."""
        return json.loads(self.request("GET", path))

    def upload(self, dicom_bytes: bytes) -> dict:
        """POST /instances: store one DICOM file; Orthanc's answer (ID, ParentStudy, Status)."""
        return json.loads(self.request("POST", "/instances", dicom_bytes))

    def last_change(self) -> int:
        """The sequence number of the newest change."""
        return int(self.get("/changes?last")["Last"])

    def wait_stable(self, study_id: str, after: int = 0, limit_s: float = 30.0) -> int:
        """Wait for a StableStudy change of the study after sequence `after`; returns its sequence number."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            changes = self.get(f"/changes?since={after}&limit=1000")["Changes"]
            for change in changes:
                if change["ChangeType"] == "StableStudy" and change["ID"] == study_id:
                    return int(change["Seq"])
            time.sleep(0.3)
        raise TimeoutError(f"no StableStudy for {study_id} within {limit_s} s; see {self.log_path}")


def write_configuration(folder: Path, http_port: int, dicom_port: int, dicomweb: bool = False,
                        extra: dict | None = None) -> Path:
    """Orthanc's configuration: loopback only, authentication on with the test user, StableAge 1 s; then `extra`.

    With `dicomweb`, Debian's DICOMweb plugin is loaded and serves /dicom-web/.
    """
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    configuration = {
        "Name": "triage-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "TRIAGETEST",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USERNAME: PASSWORD},
        "StableAge": 1, "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [], **(extra or {}),
    }
    if dicomweb:
        configuration["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}
    path = folder / "orthanc.json"
    path.write_text(json.dumps(configuration, indent=1))
    return path


@contextmanager
def running_orthanc(folder: Path, limit_s: float = 30.0, dicomweb: bool = False,
                    extra: dict | None = None) -> Iterator[Orthanc]:
    """Start Orthanc (its DICOMweb plugin if asked, `extra`: more configuration), wait until its REST API
    answers the test user; always kill it (and reap it)."""
    http_port, dicom_port = free_port(), free_port()
    configuration = write_configuration(folder, http_port, dicom_port, dicomweb, extra)
    log_path = folder / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([ORTHANC, str(configuration)], stdout=log, stderr=subprocess.STDOUT)
    orthanc = Orthanc(f"http://127.0.0.1:{http_port}", process, log_path)
    try:
        _wait_ready(orthanc, limit_s)
        yield orthanc
    finally:
        # Killed, not terminated: its storage is a throwaway folder, and a graceful stop spends ~3 s in the
        # HTTP and DICOM servers' own poll timeouts.
        process.kill()
        process.wait()


def _wait_ready(orthanc: Orthanc, limit_s: float) -> None:
    """Poll /system until it answers; raise with the log's tail if Orthanc exits or never answers."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if orthanc.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited ({orthanc.process.returncode}): {orthanc.log_path.read_text()[-2000:]}")
        try:
            orthanc.get("/system")
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"Orthanc did not answer within {limit_s} s; see {orthanc.log_path}")
