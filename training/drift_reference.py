"""Write a repository's drift reference from validation studies scored by the repository's own pipeline.

    python -m training.drift_reference REPOSITORY --data FOLDER [--bins 5] [--min-studies 200] [--backend NAME]

FOLDER is a MURA-layout folder of studies (its valid/ split when it has one), e.g. synthetic ones from
`python -m training.synthetic`. Every study goes through `Pipeline.run` as the service scores it (routed, mean
aggregation, the repository's calibration and gate), and the pipeline's `on_study` observer hands each answer
to `classifiers.drift.study_signals`, as it does for the service's drift monitor. Per body part the study was
scored as, the abnormality and router-confidence histograms (bins at their quintiles) and the share of studies
the gate flags become REPOSITORY/manifest.json "drift_reference" (docs/MONITORING.md). A part with fewer than
`--min-studies` studies is left out: its PSI would be mostly noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from classifiers import ClassifierError, Pipeline, PipelineSettings, StudyRequest, ViewInput
from classifiers.backends.registry import BACKEND_CHOICES, DEFAULT_BACKEND
from classifiers.body_parts import BODY_PARTS
from classifiers.drift import (
    DEFAULT_BINS,
    DRIFT_REFERENCE_KEY,
    REFERENCE_MIN_STUDIES,
    DriftReference,
    StudySignals,
    build_reference,
    study_signals,
)
from classifiers.repository.manifest import read_manifest, write_manifest
from classifiers.results import StudyResult
from mura.studies import Study, find_studies

SCORING_THREADS = 4  # studies in flight at once, so the batchers merge their views


def validation_studies(data: Path) -> tuple[list[Study], str]:
    """The studies under `data` (its valid/ split when it has one) and how to name them in the manifest."""
    root = data / "valid" if (data / "valid").is_dir() else data
    return find_studies(root), f"{data.name}/{root.name}" if root != data else data.name


def score_signals(repository: Path, studies: Sequence[Study], backend: str = DEFAULT_BACKEND
                  ) -> tuple[dict[str, list[StudySignals]], dict[str, Any]]:
    """Each answered study's drift signals by the body part it was scored as, and what scored them."""
    signals: dict[str, list[StudySignals]] = {part: [] for part in BODY_PARTS}
    lock = threading.Lock()

    def observe(result: StudyResult) -> None:
        with lock:
            signals[result.body_part].append(study_signals(result))

    pipeline = Pipeline.load(repository, PipelineSettings(backend=backend, on_study=observe))
    try:
        with ThreadPoolExecutor(SCORING_THREADS, thread_name_prefix="drift-reference") as pool:
            answered = sum(pool.map(lambda study: _score(pipeline, study), studies))
        scored_with = {"backend": pipeline.backend.name, "studies": answered, "unscored": len(studies) - answered,
                       "models": {role: loaded.version for role, loaded in pipeline.models.items()}}
    finally:
        pipeline.close()
    return signals, scored_with


def _score(pipeline: Pipeline, study: Study) -> bool:
    """Run one study through the pipeline (unreadable views left out); False when it was refused or unreadable."""
    try:
        views = tuple(ViewInput(path.name, path.read_bytes()) for path in study.image_paths)
        pipeline.run(StudyRequest(views, skip_unreadable=True))
    except (ClassifierError, OSError):
        return False
    return True


def write_drift_reference(repository: Path, data: Path, bins: int = DEFAULT_BINS,
                          min_studies: int = REFERENCE_MIN_STUDIES, backend: str = DEFAULT_BACKEND,
                          log: Callable[[str], None] = print) -> DriftReference:
    """Score `data`'s validation studies with the repository and write its manifest's drift reference."""
    if bins < 1 or min_studies < 1:
        raise ValueError(f"--bins ({bins}) and --min-studies ({min_studies}) must be at least 1")
    studies, data_name = validation_studies(data)
    signals, scored_with = score_signals(repository, studies, backend)
    computed_on = {"data": data_name, **scored_with, "date": datetime.date.today().isoformat()}
    reference = build_reference(signals, computed_on, bins, min_studies)
    left_out = [f"{part} ({len(signals[part])})" for part in BODY_PARTS if part not in reference.parts]
    if not reference.parts:
        raise ValueError(f"no body part has {min_studies} scored studies in {data} (studies per part: "
                         f"{', '.join(left_out)}); give more validation studies or a lower --min-studies")
    manifest = read_manifest(repository)
    write_manifest(repository, dataclasses.replace(manifest, extra={**manifest.extra,
                                                                    DRIFT_REFERENCE_KEY: reference.to_json()}))
    log(f"drift reference of {len(reference.parts)} body parts from {scored_with['studies']} studies of {data_name}"
        f" ({scored_with['backend']} backend) written to {repository / 'manifest.json'}")
    if left_out:
        log(f"left out, fewer than {min_studies} studies: {', '.join(left_out)}")
    return reference


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the drift reference; exit 2 with one line on any error."""
    parser = argparse.ArgumentParser(prog="python -m training.drift_reference", description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path, help="model repository (a folder with manifest.json)")
    parser.add_argument("--data", type=Path, required=True, help="MURA-layout validation studies (its valid/ split"
                                                                 " when it has one)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help=f"bins per histogram (default {DEFAULT_BINS})")
    parser.add_argument("--min-studies", type=int, default=REFERENCE_MIN_STUDIES,
                        help=f"studies a body part needs to get a reference (default {REFERENCE_MIN_STUDIES})")
    parser.add_argument("--backend", choices=list(BACKEND_CHOICES), default=DEFAULT_BACKEND,
                        help=f"the backend the service runs (default {DEFAULT_BACKEND}, as the service)")
    args = parser.parse_args(argv)
    try:
        write_drift_reference(args.repository, args.data, args.bins, args.min_studies, args.backend)
    except (ClassifierError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
