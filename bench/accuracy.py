"""`python -m bench.accuracy DIR FOLDER`: a repository's accuracy on labelled studies, backend by backend.

For each backend (default: tensorflow, onnx and auto, which serves the guarded INT8 models), every study of
FOLDER (MURA layout, labelled) goes through `Pipeline.predict_study` twice: without a body part, to count
the studies routed to their own part, and with it, for each expert's study AUROC on its own part. It prints one
table (routing accuracy, then AUROC per body part, a column per backend) and the backend each entry ran with,
so INT8 can be set beside fp32 on data the accuracy guard did not see.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifiers import BODY_PARTS, Pipeline, PipelineSettings, ViewInput
from mura.metrics import roc_auc
from mura.studies import Study, find_studies


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the options."""
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="model repository")
    parser.add_argument("studies", type=Path, help="labelled studies (MURA layout)")
    parser.add_argument("--backends", default="tensorflow,onnx,auto", help="comma-separated TRIAGE_BACKEND names")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    return parser.parse_args(argv)


def evaluate(repository: Path, studies: list[Study], backend: str) -> dict[str, Any]:
    """Routing accuracy and per-part study AUROC of one backend, and what ran each entry."""
    pipeline = Pipeline.load(repository, PipelineSettings(backend=backend))
    try:
        routed, scores = 0, {part: ([], []) for part in BODY_PARTS}
        for study in studies:
            views = [ViewInput(path.name, path.read_bytes()) for path in study.image_paths]
            routed += pipeline.predict_study(views).body_part == study.body_part
            labels, abnormalities = scores[study.body_part]
            labels.append(study.label)
            abnormalities.append(pipeline.predict_study(views, body_part=study.body_part).abnormality)
        return {"routing_accuracy": routed / len(studies),
                "auroc": {part: roc_auc(*pair) for part, pair in scores.items() if pair[0]},
                "ran": {role: loaded.runner.backend for role, loaded in pipeline.models.items()}}
    finally:
        pipeline.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate each backend, print the table and save the record."""
    arguments = parse_arguments(argv)
    studies = [study for study in find_studies(arguments.studies)
               if study.label is not None and study.body_part in BODY_PARTS]
    if not studies:
        print(f"{arguments.studies}: no labelled studies of a known body part", file=sys.stderr)
        return 2
    backends = [name.strip() for name in arguments.backends.split(",") if name.strip()]
    results = {backend: evaluate(arguments.repository, studies, backend) for backend in backends}
    print(f"{len(studies)} studies of {arguments.studies}")
    print("| measure | " + " | ".join(backends) + " |")
    print("| --- |" + " ---: |" * len(backends))
    print("| routing accuracy | " + " | ".join(f"{results[b]['routing_accuracy']:.3f}" for b in backends) + " |")
    for part in BODY_PARTS:
        print(f"| {part} AUROC | " + " | ".join(f"{results[b]['auroc'].get(part, float('nan')):.3f}"
                                                 for b in backends) + " |")
    for backend in backends:
        print(f"{backend}: " + ", ".join(f"{role} {ran}" for role, ran in results[backend]["ran"].items()))
    if arguments.out:
        arguments.out.write_text(json.dumps({"studies": str(arguments.studies), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
