"""Cost of a heatmap per view next to the expert's own forward pass, on a real repository.

    python -m bench.explain [--models h5] [--body-part XR_WRIST] [--views 40] [--backend tensorflow|onnx]
                            [--out docs/benchmarks/explain.json]

One view at a time (batch 1, as a single-view request): the expert's forward pass (the backend's
runner), the explainer's maps, and the whole explanation (maps, upsampling, peak, PNG overlay). For the
ONNX backend it also times building the Keras explainer on first use (the lazy load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.machine import describe_machine, load_average
from bench.workload import make_view_bytes
from classifiers.decoding.imaging import decode_image, resize_image
from classifiers.explain.overlay import explain_view
from classifiers.pipeline import Pipeline, PipelineSettings


def _median_ms(task, repeats: int) -> float:
    """Median wall time of `task()` in milliseconds over `repeats` runs (after one untimed run)."""
    task()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        task()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(models: Path, body_part: str, num_views: int, backend: str) -> dict[str, object]:
    """Time forward pass, maps and full explanation per view; returns the record."""
    pipeline = Pipeline.load(models, PipelineSettings(backend=backend))
    try:
        expert = pipeline.models[body_part]
        started = time.perf_counter()
        explainer = pipeline.explainers.get(expert.entry)
        first_use_ms = (time.perf_counter() - started) * 1000
        views = [decode_image(make_view_bytes(seed)) for seed in range(num_views)]
        batches = [resize_image(view, expert.input_size)[None] for view in views]
        index = iter(range(10**9))

        def forward() -> None:
            expert.runner.predict(batches[next(index) % num_views])

        def maps() -> None:
            explainer.maps(batches[next(index) % num_views])

        def explanation() -> None:
            position = next(index) % num_views
            explain_view(views[position], [item[0] for item in explainer.maps(batches[position])], explainer.method)

        record = {
            "models": str(models), "backend": backend, "body_part": body_part, "views": num_views,
            "view_size": list(views[0].size), "method": explainer.method, "layers": explainer.layers,
            "explainer_first_use_ms": round(first_use_ms, 1),
            "forward_ms": round(_median_ms(forward, num_views), 3),
            "maps_ms": round(_median_ms(maps, num_views), 3),
            "explanation_ms": round(_median_ms(explanation, num_views), 3),
        }
    finally:
        pipeline.close()
    record["maps_over_forward"] = round(record["maps_ms"] / record["forward_ms"], 2)
    record["explanation_over_forward"] = round(record["explanation_ms"] / record["forward_ms"], 2)
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the measurement, print it and optionally write it as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("h5"))
    parser.add_argument("--body-part", default="XR_WRIST")
    parser.add_argument("--views", type=int, default=40)
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--out", type=Path, help="write the record here as JSON")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    arguments = parser.parse_args(argv)
    record = {"machine": describe_machine(), "load_average": load_average(), "note": arguments.note,
              **measure(arguments.models, arguments.body_part, arguments.views, arguments.backend)}
    print(json.dumps(record, indent=2))
    if arguments.out:
        arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
