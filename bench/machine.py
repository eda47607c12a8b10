"""The machine: CPU model, cores, load, the fp32 matmul limit and peak memory."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from pathlib import Path


def describe_machine() -> dict[str, object]:
    """CPU model, core count, SIMD flags, load average and library versions."""
    import tensorflow as tf

    model_name = "unknown"
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model_name = next((line.split(":", 1)[1].strip() for line in output.splitlines()
                           if line.startswith("Model name")), model_name)
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": model_name,
        "cores": os.cpu_count(),
        "simd": simd_flags(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "onnxruntime": _version_of("onnxruntime"),
    }


def simd_flags() -> list[str]:
    """The CPU's SIMD flags that decide which kernels run (avx2, avx512f, avx512_vnni, ...)."""
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return [flag for flag in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
            if flag in flags]


def _version_of(package: str) -> str | None:
    """An installed package's version, None when absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of GFLOP/s of a (size x size) @ (size x size) fp32 matmul with TensorFlow's default threads."""
    import tensorflow as tf

    left = tf.random.normal((size, size))
    right = tf.random.normal((size, size))
    multiply = tf.function(lambda: tf.matmul(left, right), autograph=False)  # nothing to convert; no warning
    multiply().numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        multiply().numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident memory) of another process, MB; None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
