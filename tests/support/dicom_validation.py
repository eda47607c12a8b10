"""Validators no one here wrote: dicom3tools' dciodvfy and DCMTK's dsrdump, run on the objects the service writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _tool(name: str) -> str:
    """The tool's path; the test is skipped, saying what to install, when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install dicom3tools dcmtk; make test installs them)")
    return path


def dciodvfy_errors(data: bytes, folder: Path, name: str) -> list[str]:
    """The "Error" lines dciodvfy reports for one DICOM file (its warnings are not errors)."""
    path = folder / f"{name}.dcm"
    path.write_bytes(data)
    run = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def dsrdump(data: bytes, folder: Path) -> str:
    """DCMTK's text rendering of an SR's content tree."""
    path = folder / "report.dcm"
    path.write_bytes(data)
    run = subprocess.run([_tool("dsrdump"), str(path)], capture_output=True, text=True, timeout=60, check=True)
    return run.stdout
