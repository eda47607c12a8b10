"""Start-up logs say what runs (models, backend, device, ready); TensorFlow's own notices only at debug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Printed by TensorFlow's C++ code at import and device listing on a CPU machine.
LIBRARY_NOISE = ("oneDNN custom operations", "absl::InitializeLog", "cuda")


def _load_with_log_level(repository: Path, level: str) -> subprocess.CompletedProcess:
    """Load the repository through the service's loader in a fresh process, logging at `level`."""
    code = ("from pathlib import Path\n"
            "from classifiers.logs import configure_logging\n"
            f"configure_logging({level!r})\n"
            "from web.loading import PipelineLoader\n"
            "from classifiers import PipelineSettings\n"
            f"PipelineLoader(Path({str(repository)!r}), PipelineSettings()).load().close()\n")
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}  # no TF_CPP_MIN_LOG_LEVEL from the suite
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env=environment)


def test_start_up_log_names_models_backend_device_and_ready_without_library_noise(tiny_repository: Path) -> None:
    result = _load_with_log_level(tiny_repository, "info")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    # The default backend, auto, runs this Keras-only repository's files with TensorFlow and says so per model.
    assert any("8 models loaded from" in line and "auto backend on CPU" in line and line.endswith("ready")
               for line in lines), result.stderr
    model_lines = [line for line in lines if line.split(": ", 1)[-1].startswith(("router ", "XR_"))]
    assert len(model_lines) == 8 and all("(tensorflow backend, keras, 32x32)" in line for line in model_lines)
    for noise in LIBRARY_NOISE:
        assert noise.lower() not in result.stderr.lower(), noise


@pytest.mark.parametrize("level", ["debug"])
def test_library_output_comes_back_at_debug(tiny_repository: Path, level: str) -> None:
    result = _load_with_log_level(tiny_repository, level)
    assert result.returncode == 0, result.stderr
    assert "oneDNN custom operations" in result.stderr


def test_describe_exception_names_types_and_frames_never_messages() -> None:
    import logging
    import warnings

    from classifiers.logs import describe_exception, quiet_dicom_libraries

    def convert() -> None:
        raise ValueError("Unable to convert '1927-08-15' to 'DA' object")

    try:
        try:
            convert()
        except ValueError as error:
            raise TypeError("PatientName Leakmore^Penelope") from error
    except TypeError as error:
        described = describe_exception(error)
    assert described.startswith("builtins.TypeError at tests/test_logs.py:")
    assert "<- caused by builtins.ValueError at " in described and "in convert" in described
    assert "1927" not in described and "Leakmore" not in described
    quiet_dicom_libraries()
    quiet_dicom_libraries()  # idempotent: one filter, however often it is called
    assert sum(1 for entry in warnings.filters if "pydicom" in str(getattr(entry[3], "pattern", entry[3]))) == 1
    for name in ("pydicom", "highdicom", "highdicom.sr.sop"):
        assert not logging.getLogger(name).isEnabledFor(logging.CRITICAL)
