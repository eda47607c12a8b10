"""The decoders under atheris for a few seconds: any bytes give a decoded view or a typed error, and no codec
gets a frame whose own header disagrees with its dataset.

A longer run is `make fuzz FUZZ_SECONDS=...`; its executions per second are a figure (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ_FLAGS = ["-max_total_time=3", "-rss_limit_mb=4096"]  # make fuzz runs as long as asked


def test_decoding_survives_a_few_seconds_of_fuzzing(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "fuzz.decoding", *FUZZ_FLAGS,
                             str(tmp_path / "corpus")], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = re.search(r"Done (\d+) runs", result.stderr)
    assert runs and int(runs.group(1)) > 0, result.stderr[-1000:]
    assert not list(tmp_path.glob("crash-*"))
    assert {path.suffix for path in (tmp_path / "corpus").iterdir()} >= {".png", ".jpg", ".tif", ".bmp", ".dcm"}


def test_codestream_headers_survive_a_few_seconds_of_fuzzing(tmp_path: Path) -> None:
    """fuzz.codestreams: no codec ever gets a frame whose own header disagrees with its dataset."""
    result = subprocess.run([sys.executable, "-m", "fuzz.codestreams", *FUZZ_FLAGS, str(tmp_path / "corpus")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = re.search(r"Done (\d+) runs", result.stderr)
    assert runs and int(runs.group(1)) > 0, result.stderr[-1000:]
    assert not list(tmp_path.glob("crash-*"))
    seeds = {path.stem for path in (tmp_path / "corpus").iterdir()}
    assert {"jpeg-baseline-huge", "jpeg-lossless-huge", "jpeg-ls-huge", "jpeg2000-huge", "rle-segments"} <= seeds
