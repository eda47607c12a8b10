"""`python -m bench.openvino_compare DIR`: the served INT8 (NNCF, OpenVINO) against ONNX Runtime's INT8 on one entry.

Which INT8 path is faster on DenseNet169, ONNX Runtime's static quantization or OpenVINO + NNCF? This makes
both from the entry's fp32 ONNX export, calibrated on the same synthetic views:
ONNX Runtime's `quantize_static` (QDQ, per-channel int8 weights, uint8 activations, min-max: what the service
served before) and `training.quantize.quantize_openvino` (NNCF: what it serves now); then times,
alternately in one process and with the service's threads per model, the fp32 ONNX Runtime session, both INT8
models, the fp32 model run by OpenVINO and ONNX Runtime's INT8 file run by OpenVINO, at batch 1 and 8 and two at
once side by side (as the router and an expert batch run), and compares each with fp32 on views none was
calibrated on.

    python -m bench.openvino_compare bench/results/models/<repository> --out openvino.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import load_average, simd_flags
from bench.workload import make_view_bytes
from classifiers.backends.onnx_backend import OnnxModel
from classifiers.decoding.imaging import decode_image, resize_image
from classifiers.repository.entries import ONNX_FILE_KEY
from classifiers.repository.manifest import read_manifest
from training.quantize import quantize_openvino

BATCH_SIZES = (1, 8)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the comparison's options."""
    parser = argparse.ArgumentParser(prog="python -m bench.openvino_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="a repository optimized with training.optimize --int8")
    parser.add_argument("--role", default="router", help="the entry to compare (router or an expert)")
    parser.add_argument("--threads", type=int, default=1, help="threads per model (the service gives each 1 here)")
    parser.add_argument("--calibration-views", type=int, default=16, help="synthetic views NNCF calibrates on")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per model and batch size")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    return parser.parse_args(argv)


def synthetic_views(count: int, size: tuple[int, int], seed_offset: int = 0) -> np.ndarray:
    """`count` benchmark views (bench.workload) decoded and resized as the service does: (N, H, W, 3) uint8."""
    return np.stack([resize_image(decode_image(make_view_bytes(seed_offset + seed)), size) for seed in range(count)])


def median_ms(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, rounds: int) -> float:
    """Median milliseconds of `rounds` calls after one untimed call."""
    run(batch)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def side_by_side_views_per_second(forwards: Sequence[Callable[[np.ndarray], np.ndarray]], batch: np.ndarray,
                                  rounds: int) -> float:
    """Views/s of `forwards` each called `rounds` times on its own thread at once, as the service's router and
    expert batches run side by side."""
    threads = [threading.Thread(target=lambda forward=forward: [forward(batch) for _ in range(rounds)])
               for forward in forwards]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(forwards) * rounds * len(batch) / (time.perf_counter() - start)


def quantize_both(fp32_onnx: Path, input_name: str, calibration: list[np.ndarray],
                  folder: Path) -> tuple[Path, Path, dict[str, float]]:
    """ONNX Runtime's static INT8 (.onnx) and NNCF's (.xml) of `fp32_onnx`, written under `folder`; seconds each."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    feeds = iter([{input_name: batch} for batch in calibration])

    class Reader:
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    onnxruntime_int8, openvino_int8 = folder / "onnxruntime.int8.onnx", folder / "openvino.int8.xml"
    start = time.perf_counter()
    quantize_static(str(fp32_onnx), str(onnxruntime_int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    middle = time.perf_counter()
    quantize_openvino(fp32_onnx, openvino_int8, calibration)
    seconds = {"onnxruntime": middle - start, "nncf": time.perf_counter() - middle}
    return onnxruntime_int8, openvino_int8, seconds


def openvino_forward(core: Any, model: Any, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The model compiled for the CPU as one of the service's eight would be, as a forward function."""
    # Eight models share the cores in the service: no pinning of each model's threads to the same cores.
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "ENABLE_CPU_PINNING": False})
    output = compiled.output(0)
    return lambda batch: np.asarray(compiled(batch)[output], dtype=np.float32)


def compare(arguments: argparse.Namespace) -> dict[str, Any]:
    """Time the four models alternately and compare their probabilities with fp32 ONNX Runtime."""
    import openvino

    folder = arguments.repository
    entry = read_manifest(folder, verify_checksums=False).entry(arguments.role)
    fp32_onnx = folder / entry.files[ONNX_FILE_KEY]

    def onnxruntime_forward(path: Path) -> Callable[[np.ndarray], np.ndarray]:
        return OnnxModel(entry.role, path, entry.input_size, entry.preprocessing, arguments.threads).forward

    reference_model = OnnxModel(entry.role, fp32_onnx, entry.input_size, entry.preprocessing, arguments.threads)
    calibration_pixels = synthetic_views(arguments.calibration_views, entry.input_size)
    calibration = [reference_model.prepare(calibration_pixels[start : start + 8])
                   for start in range(0, len(calibration_pixels), 8)]
    scratch = Path(tempfile.mkdtemp(prefix="int8-compare-"))
    onnxruntime_int8, openvino_int8, quantize_seconds = quantize_both(fp32_onnx, reference_model.input_name,
                                                                      calibration, scratch)
    core = openvino.Core()
    builders = {"onnxruntime_fp32": lambda: onnxruntime_forward(fp32_onnx),
                "onnxruntime_int8": lambda: onnxruntime_forward(onnxruntime_int8),
                "openvino_fp32": lambda: openvino_forward(core, core.read_model(str(fp32_onnx)), arguments.threads),
                "openvino_nncf_int8": lambda: openvino_forward(core, core.read_model(str(openvino_int8)),
                                                               arguments.threads),
                # ONNX Runtime's QDQ file read by OpenVINO: its runtime without NNCF.
                "openvino_runs_onnxruntime_int8": lambda: openvino_forward(
                    core, core.read_model(str(onnxruntime_int8)), arguments.threads)}
    # Two instances of each, as the service's router and expert are two models run side by side.
    models = {name: (build(), build()) for name, build in builders.items()}
    # Views the INT8 models were not calibrated on: what serving sees.
    held_out = reference_model.prepare(synthetic_views(max(BATCH_SIZES), entry.input_size, seed_offset=1000))
    times: dict[str, dict[int, list[float]]] = {name: {size: [] for size in BATCH_SIZES} for name in models}
    side_by_side: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(3):  # alternate, so a neighbour's burst touches every model alike
        for name, pair in models.items():
            for size in BATCH_SIZES:
                times[name][size].append(median_ms(pair[0], held_out[:size], arguments.rounds))
            side_by_side[name].append(side_by_side_views_per_second(pair, held_out, arguments.rounds))
    reference = reference_model.forward(held_out)
    record: dict[str, Any] = {
        "repository": str(folder), "role": entry.role, "input_size": list(entry.input_size),
        "threads_per_model": arguments.threads, "simd": simd_flags(), "load_average": load_average(),
        "openvino": openvino.__version__,
        "quantize_seconds": {name: round(seconds, 1) for name, seconds in quantize_seconds.items()}, "models": {},
    }
    shutil.rmtree(scratch, ignore_errors=True)
    for name, pair in models.items():
        difference = np.abs(pair[0](held_out) - reference)
        record["models"][name] = {
            **{f"batch{size}_ms": round(min(times[name][size]), 1) for size in BATCH_SIZES},
            "two_side_by_side_batch8_views_per_s": round(max(side_by_side[name]), 1),
            "max_abs_difference_vs_fp32": float(difference.max()),
            "mean_abs_difference_vs_fp32": float(difference.mean()),
        }
    return record


def print_table(record: dict[str, Any]) -> None:
    """The comparison as a Markdown table."""
    print(f"{record['role']} at {record['input_size']}, {record['threads_per_model']} thread(s) per model,"
          f" SIMD {','.join(record['simd'])}, OpenVINO {record['openvino']}, quantizing took"
          f" {record['quantize_seconds']} s")
    print("| model | batch 1 ms | batch 8 ms | two side by side at batch 8, views/s | max abs diff vs fp32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, figures in record["models"].items():
        print(f"| {name} | {figures['batch1_ms']} | {figures['batch8_ms']} |"
              f" {figures['two_side_by_side_batch8_views_per_s']} | {figures['max_abs_difference_vs_fp32']:.4f} |")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison, print it and write the record."""
    arguments = parse_arguments(argv)
    record = compare(arguments)
    print_table(record)
    if arguments.out:
        arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
