"""Score a folder or CSV of radiograph studies with the two-stage pipeline; see docs/SCORING.md.

    python score.py INPUT --out predictions.csv [--models h5/] [--aggregation mean|max]
                    [--report DIR] [--worklist [PATH]] [--sr DIR] [--workers N] [--heatmaps DIR [--findings CSV]]
                    [--engine local|ray [--ray-address ADDRESS] [--gpus-per-worker G]]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MODELS = Path(__file__).resolve().parent / "h5"
DEFAULT_WORKERS = {"local": 8, "ray": 2}  # studies at once in this process; Ray actors (a model copy each)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser; each option maps to one ScoringOptions field."""
    from classifiers.study_policy import AGGREGATIONS

    parser = argparse.ArgumentParser(
        prog="score.py",
        description="Score radiograph studies (MURA-layout folder, leaf-folder tree or CSV of image paths; PNG, "
        "JPEG or DICOM, a DICOM study being a StudyInstanceUID); "
        "one CSV row per study, resumable.",
    )
    parser.add_argument("input", type=Path, help="folder of studies or CSV of image paths")
    parser.add_argument("--out", type=Path, required=True, help="predictions CSV (appended; rerun resumes)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="model repository (default: h5/)")
    parser.add_argument("--aggregation", default="mean", choices=list(AGGREGATIONS),
                        help="study score from view scores (default: mean)")
    parser.add_argument("--report", type=Path, help="folder for report.md, report.json and plots (needs labels)")
    parser.add_argument("--worklist", type=Path, nargs="?", const=True, default=None,
                        help="write the triage worklist (default path: <out stem>_worklist.csv)")
    parser.add_argument("--errors", type=Path, help="errors CSV (default: <out stem>_errors.csv)")
    parser.add_argument("--sr", type=Path, help="folder for one DICOM SR per DICOM study (<StudyInstanceUID>.dcm)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local engine: studies scored at once (default 8); ray engine: actors, each with"
                             " its own copy of the models (default 2)")
    parser.add_argument("--decode-workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image decoding threads")
    parser.add_argument("--bootstrap-replicates", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--heatmaps", type=Path, help="folder for heatmap overlay PNGs (one per view; peaks in "
                        "<out stem>_peaks.csv); scored by the pointing game when findings are known")
    parser.add_argument("--findings", type=Path, help="findings CSV for the pointing game (default: "
                        "<split>_findings.csv beside the input, as training.synthetic writes it)")
    parser.add_argument("--engine", default="local", choices=("local", "ray"),
                        help="local: threads in this process (default); ray: Ray Data actors (pip install -r"
                             " requirements-ray.txt; docs/SCORING.md, 'On a Ray cluster')")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (e.g. auto, or ray://HOST:10001); default: RAY_ADDRESS when set,"
                             " else a local Ray of its own")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray engine: GPUs per actor")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="log the libraries' own output (TensorFlow's) too")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the scoring job and return the exit code."""
    arguments = build_parser().parse_args(argv)
    from classifiers.logs import configure_logging
    from scoring.command import ScoringOptions, run_scoring

    configure_logging("DEBUG" if arguments.verbose else "WARNING")

    worklist = arguments.worklist
    if worklist is True:
        worklist = arguments.out.with_name(f"{arguments.out.stem}_worklist.csv")
    return run_scoring(ScoringOptions(
        input_path=arguments.input, out=arguments.out, models=arguments.models,
        aggregation=arguments.aggregation, report=arguments.report, worklist=worklist,
        errors=arguments.errors, sr=arguments.sr, workers=arguments.workers or DEFAULT_WORKERS[arguments.engine],
        decode_workers=arguments.decode_workers, bootstrap_replicates=arguments.bootstrap_replicates,
        seed=arguments.seed, progress=not arguments.no_progress, heatmaps=arguments.heatmaps,
        findings=arguments.findings, engine=arguments.engine, ray_address=arguments.ray_address,
        gpus_per_worker=arguments.gpus_per_worker,
    ))


if __name__ == "__main__":
    sys.exit(main())
