"""`python -m bench.startup DIR`: where the seconds of loading a repository go, one fresh process per run.

Each run is a new Python process that imports the project (TensorFlow included), loads every model of DIR
with `--backend` and warms it up, as a worker does before /readyz says 200, and reports the total with its
causes: import, runtime and devices, manifest and checksums, then each model's load and warm-up. `--code TREE`
adds another checkout's code (e.g. `git worktree add /tmp/before <commit>`) on the same repository, run
alternately with this one, so a before/after ratio comes from one session on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import load_average, simd_flags

HERE = Path(__file__).resolve().parent.parent

# Runs in the child, with the checkout under test first on sys.path; prints one JSON line.
CHILD = """
import json, sys, time
started = time.perf_counter()
from classifiers import Pipeline, PipelineSettings
imported = time.perf_counter()
pipeline = Pipeline.load(sys.argv[1], PipelineSettings(backend=sys.argv[2]))
total = time.perf_counter() - started
record = {"total_s": total, "project_import_s": imported - started,
          "breakdown_s": dict(getattr(pipeline, "load_breakdown", {})),
          "models_s": {role: dict(getattr(loaded, "seconds", {})) for role, loaded in pipeline.models.items()}}
pipeline.close()
print("STARTUP " + json.dumps(record))
"""


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the start-up benchmark's options."""
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="the model repository to load")
    parser.add_argument("--backend", default="tensorflow", help="TRIAGE_BACKEND of the runs (default tensorflow)")
    parser.add_argument("--runs", type=int, default=3, help="runs per checkout")
    parser.add_argument("--code", type=Path, default=None, help="another checkout to compare, run alternately")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    return parser.parse_args(argv)


def load_once(code: Path, repository: Path, backend: str) -> dict[str, Any]:
    """Load the repository in a fresh process running `code`'s checkout; its timings."""
    environment = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2"}
    finished = subprocess.run([sys.executable, "-c", CHILD, str(repository.resolve()), backend], cwd=code,
                              env=environment, capture_output=True, text=True, check=False)
    line = next((line for line in finished.stdout.splitlines() if line.startswith("STARTUP ")), None)
    if finished.returncode != 0 or line is None:
        raise SystemExit(f"loading {repository} with {code} failed:\n{finished.stderr[-2000:]}")
    return json.loads(line.removeprefix("STARTUP "))


def describe(label: str, run: dict[str, Any]) -> str:
    """One line: total and causes, then the per-model seconds."""
    causes = ", ".join(f"{cause} {seconds:.2f}" for cause, seconds in
                       {"project import": run["project_import_s"], **run["breakdown_s"]}.items())
    models = ", ".join(f"{role} {seconds.get('load', 0):.2f}+{seconds.get('warm_up', 0):.2f}"
                       for role, seconds in run["models_s"].items())
    return f"{label}: {run['total_s']:.1f} s ({causes}); per model load+warm-up: {models}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the loads alternately, print each, and the ratio of the medians when comparing."""
    arguments = parse_arguments(argv)
    checkouts = {"this": HERE, **({"other": arguments.code.resolve()} if arguments.code else {})}
    record: dict[str, Any] = {"repository": str(arguments.repository), "backend": arguments.backend,
                              "simd": simd_flags(), "load_average_start": load_average(),
                              "runs": {label: [] for label in checkouts}}
    for index in range(arguments.runs):
        for label, code in checkouts.items():
            run = load_once(code, arguments.repository, arguments.backend)
            record["runs"][label].append(run)
            print(describe(f"{label} {index + 1}", run), flush=True)
    record["load_average_end"] = load_average()
    medians = {label: sorted(run["total_s"] for run in runs)[len(runs) // 2] for label, runs in record["runs"].items()}
    record["median_total_s"] = medians
    if "other" in medians:
        record["other_over_this"] = medians["other"] / medians["this"]
        print(f"median {medians['other']:.1f} s (other) / {medians['this']:.1f} s (this) ="
              f" {record['other_over_this']:.2f}x")
    if arguments.out:
        arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
