"""Fit the out-of-domain gate's statistics on a repository's training views and record them in the repository.

    python -m training.fit_gate REPO [--data MURA_ROOT] [--studies N] [--seed S]

With `--data`, the views are the images of that folder (its train/ split when it has one). Without it, the
demo's own training images are drawn again (training.synthetic, split "train", seed S: the shipped demo
models were trained on seed 0), since they are deterministic. Four views in five fit the mean and
covariance; the fifth sets the threshold (classifiers/gate.py). Writes REPO/gate.npz and its record in
REPO/manifest.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from classifiers import ClassifierError, ImageLimits, Pipeline, PipelineSettings
from classifiers.decoding import load_view_file
from classifiers.decoding.imaging import resize_image
from classifiers.gate import GATE_FILE, GATE_KEY, METHOD, fit_gate, view_features
from classifiers.repository.entries import sha256_file
from classifiers.repository.manifest import read_manifest, write_manifest
from mura.studies import find_studies
from training.synthetic import generate_dataset

CALIBRATION_EVERY = 5  # every fifth view sets the threshold; the rest fit the statistics


def gate_features(pipeline: Pipeline, image_paths: Sequence[Path], batch_size: int = 32) -> np.ndarray:
    """(N, F) gate features of the readable views among `image_paths`, with the pipeline's own router."""
    router = pipeline.models["router"]
    images = [view.image for path in image_paths for view in load_view_file(path, ImageLimits())]
    features = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        probabilities = router.runner.predict(np.stack([resize_image(image, router.input_size) for image in batch]))
        features += [view_features(image, row) for image, row in zip(batch, probabilities, strict=True)]
    return np.stack(features)


def fit_repository_gate(folder: Path, image_paths: Sequence[Path], fitted_on: str,
                        log: Callable[[str], None] = print) -> Path:
    """Fit the gate on `image_paths` with the repository's router; write gate.npz and its manifest record."""
    pipeline = Pipeline.load(folder, PipelineSettings(backend="tensorflow", warmup=False))
    try:
        features = gate_features(pipeline, image_paths)
    finally:
        pipeline.close()
    calibration = np.arange(len(features)) % CALIBRATION_EVERY == 0
    gate = fit_gate(features[~calibration], features[calibration])
    path = folder / GATE_FILE
    gate.save(path)
    manifest = read_manifest(folder)
    record = {"file": GATE_FILE, "sha256": sha256_file(path), "method": METHOD, "threshold": gate.threshold,
              "fitted_on": fitted_on, "views": int(len(features))}
    write_manifest(folder, dataclasses.replace(manifest, extra={**manifest.extra, GATE_KEY: record}))
    log(f"gate fitted on {len(features)} views ({fitted_on}); threshold {gate.threshold:.1f}; wrote {path}")
    return path


def training_image_paths(data: Path) -> list[Path]:
    """Every image of the training studies under `data` (its train/ split when it has one)."""
    root = data / "train" if (data / "train").is_dir() else data
    return [path for study in find_studies(root) for path in study.image_paths]


def main(argv: list[str] | None = None) -> int:
    """Command line: fit and record the gate; exit 2 with one line on any error."""
    parser = argparse.ArgumentParser(prog="python -m training.fit_gate", description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path, help="model repository (a folder with manifest.json)")
    parser.add_argument("--data", type=Path, help="MURA-layout training data (default: the demo's own, redrawn)")
    parser.add_argument("--studies", type=int, default=400, help="demo studies to redraw (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo's training data (default 0)")
    args = parser.parse_args(argv)
    try:
        if args.data is not None:
            fitted_on = f"training images of {args.data.name}"
            fit_repository_gate(args.repository, training_image_paths(args.data), fitted_on)
            return 0
        with tempfile.TemporaryDirectory(prefix="gate-fit-") as work:
            generate_dataset(work, args.studies, args.seed, "train")
            fitted_on = f"synthetic-demo train split, seed {args.seed}, first {args.studies} studies"
            fit_repository_gate(args.repository, training_image_paths(Path(work)), fitted_on)
    except (ClassifierError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
