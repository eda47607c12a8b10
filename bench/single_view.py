"""`python -m bench.single_view DIR`: one client's 1-view studies over HTTP against the forward passes they need.

A real gunicorn serves DIR with the default settings; one keep-alive client posts 1-view studies (512x400
grayscale PNGs) in blocks alternating with blocks of the router's and an expert's forward pass at batch 1,
timed in this process with the same backend, so both see the machine in the same state. Reported per run: the
HTTP p50, the forwards' medians, the p50 less their sum (the work around the models: HTTP, decoding, resizing,
preprocessing, hand-offs) and the p50 over their sum (the target: at most 1.3). `--code TREE` adds another
checkout's service (e.g. `git worktree add /tmp/before <commit>`), run alternately with this one's on the same
repository, so a before/after comparison comes from one session on one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.launch import ROOT
from bench.machine import load_average, simd_flags


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the single-view benchmark's options."""
    parser = argparse.ArgumentParser(prog="python -m bench.single_view", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="the model repository to serve")
    parser.add_argument("--backend", default="auto", help="TRIAGE_BACKEND of the service and the forwards")
    parser.add_argument("--runs", type=int, default=3, help="gunicorn starts per checkout")
    parser.add_argument("--requests", type=int, default=60, help="1-view studies per run")
    parser.add_argument("--code", type=Path, default=None, help="another checkout's service, run alternately")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    return parser.parse_args(argv)


def load_forwards(repository: Path, backend: str) -> dict[str, Any]:
    """The router's and the first expert's forward at batch 1, loaded as the service loads them."""
    from bench.inprocess import batch_one_forwards
    from classifiers import Pipeline, PipelineSettings

    pipeline = Pipeline.load(repository, PipelineSettings(backend=backend))
    pipeline.close()
    return batch_one_forwards(pipeline)


def measure_once(code: Path, repository: Path, backend: str, forwards: dict[str, Any], requests: int,
                 log_path: Path) -> dict[str, Any]:
    """Start `code`'s gunicorn over the repository, measure the single views beside the forwards, stop it."""
    from bench.service import run_gunicorn, single_view_against_forward
    from bench.workload import make_view_bytes

    views = [make_view_bytes(seed) for seed in range(12)]
    with run_gunicorn(repository, 1, 16, {"TRIAGE_BACKEND": backend}, log_path, startup_limit_s=600,
                      code=code) as server:
        single = single_view_against_forward(server, views, forwards, requests)
    return {key: single[key] for key in ("p50_ms", "forward_ms", "errors", "server_timing_ms", "p50_less_forward_ms",
                                         "p50_over_forward")}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checkouts' services alternately; print each run and the medians per checkout."""
    arguments = parse_arguments(argv)
    checkouts = {"this": ROOT, **({"other": arguments.code.resolve()} if arguments.code else {})}
    forwards = load_forwards(arguments.repository.resolve(), arguments.backend)
    record: dict[str, Any] = {"repository": str(arguments.repository), "backend": arguments.backend,
                              "simd": simd_flags(), "load_average_start": load_average(),
                              "checkouts": {label: str(code) for label, code in checkouts.items()},
                              "runs": {label: [] for label in checkouts}}
    log_path = (arguments.out or ROOT / "bench" / "results" / "single_view.json").with_suffix(".gunicorn.log")
    for index in range(arguments.runs):
        for label, code in checkouts.items():
            run = measure_once(code, arguments.repository.resolve(), arguments.backend, forwards, arguments.requests,
                               log_path)
            record["runs"][label].append(run)
            print(f"{label} {index + 1}: HTTP p50 {run['p50_ms']:.1f} ms; forwards router"
                  f" {run['forward_ms']['router']:.1f} + expert {run['forward_ms']['expert']:.1f} ms; p50 less"
                  f" forwards {run['p50_less_forward_ms']:.1f} ms; p50 / forwards {run['p50_over_forward']:.2f};"
                  f" in the service (medians): " + ", ".join(f"{key} {value:.1f}" for key, value in
                                                             run["server_timing_ms"].items())
                  + f" ms; errors {run['errors']}", flush=True)
    record["load_average_end"] = load_average()
    record["medians"] = {label: {key: statistics.median(run[key] for run in runs)
                                 for key in ("p50_ms", "p50_less_forward_ms", "p50_over_forward")}
                         for label, runs in record["runs"].items()}
    for label, medians in record["medians"].items():
        print(f"median over runs, {label}: HTTP p50 {medians['p50_ms']:.1f} ms, p50 less forwards"
              f" {medians['p50_less_forward_ms']:.1f} ms, p50 / forwards {medians['p50_over_forward']:.2f}")
    if arguments.out:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
