"""Build the shipped demo models: synthetic radiographs -> smallcnn router + seven experts in h5/.

    python -m training.demo [--out h5] [--seed 0]

The experts start from one shared abnormality model trained on every body part (the findings look
alike across parts), then each is fine-tuned on its own part. Figures on a held-out synthetic set,
drawn with another seed, go into the manifest. Demo models on synthetic images: not for clinical use.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from classifiers.body_parts import BODY_PARTS
from classifiers.repository.manifest import MANIFEST_NAME, read_manifest, update_manifest_entry
from mura.studies import find_studies
from training.data import ROUTER_TASK, TaskExamples, split_studies, task_examples
from training.evaluation import expert_metrics, predict_study_scores, router_metrics
from training.fit_gate import fit_repository_gate, training_image_paths
from training.operating_points import fit_repository
from training.synthetic import generate_dataset
from training.train import TrainingConfig, fit_model, train_task

SHARED_ROLE = "shared_abnormality"


@dataclass(frozen=True)
class DemoRecipe:
    """Data sizes and training lengths of the demo models (chosen to meet the bars in minutes)."""

    train_studies: int = 1050
    valid_studies: int = 210
    heldout_studies: int = 140
    # Calibration and operating points: fitted on their own seed (+2), measured on another (+4); 300 and 400
    # studies a part, since calibration error on fewer is mostly sampling noise.
    calibration_studies: int = 2100
    calibration_heldout_studies: int = 2800
    router_input_size: int = 64  # the body parts differ in gross shape: 64 px is plenty
    input_size: int = 128  # findings are small: the experts look closer
    batch_size: int = 32
    router_epochs: int = 6
    shared_epochs: int = 7
    expert_epochs: int = 2
    learning_rate: float = 1e-3


def generate_demo_data(work: Path, seed: int, recipe: DemoRecipe) -> tuple[Path, Path]:
    """Write train/valid (seed) and a held-out test split (seed + 1) under WORK; return both roots."""
    data_root, heldout_root = work / "SYNTH-train", work / "SYNTH-heldout"
    began = time.perf_counter()
    generate_dataset(data_root, recipe.train_studies, seed, "train", overwrite=True)
    generate_dataset(data_root, recipe.valid_studies, seed, "valid", overwrite=True)
    generate_dataset(heldout_root, recipe.heldout_studies, seed + 1, "test", overwrite=True)
    print(f"synthetic data written to {work} in {time.perf_counter() - began:.0f} s")
    return data_root, heldout_root


def merge_examples(parts: list[TaskExamples]) -> TaskExamples:
    """Concatenate the examples of several tasks into one."""
    return TaskExamples(
        paths=tuple(path for part in parts for path in part.paths),
        labels=np.concatenate([part.labels for part in parts]),
        study_ids=tuple(study_id for part in parts for study_id in part.study_ids),
    )


def train_demo_models(data_root: Path, out: Path, work: Path, seed: int, recipe: DemoRecipe) -> None:
    """Train the router, the shared abnormality model and the seven fine-tuned experts into OUT."""
    base = TrainingConfig(
        data=data_root,
        backbone="smallcnn",
        input_size=recipe.input_size,
        batch_size=recipe.batch_size,
        out=out,
        logs=work / "logs",
        seed=seed,
        learning_rate=recipe.learning_rate,
        early_stopping_patience=4,
        plateau_patience=2,
        data_name="synthetic-demo",
    )
    train_studies, valid_studies = split_studies(data_root, 0.1, seed)
    router_config = replace(base, task=ROUTER_TASK, epochs=recipe.router_epochs, input_size=recipe.router_input_size)
    train_task(router_config, train_studies, valid_studies)
    shared_train = merge_examples([task_examples(train_studies, part) for part in BODY_PARTS])
    shared_valid = merge_examples([task_examples(valid_studies, part) for part in BODY_PARTS])
    shared_config = replace(base, epochs=recipe.shared_epochs)
    shared_model, _ = fit_model(shared_config, SHARED_ROLE, shared_train, shared_valid)
    shared_weights = work / f"{SHARED_ROLE}.weights.h5"
    shared_model.save_weights(shared_weights)
    for part in BODY_PARTS:
        expert_config = replace(
            base,
            task=part,
            epochs=recipe.expert_epochs,
            init_weights=str(shared_weights),
            learning_rate=recipe.learning_rate / 10,
        )
        train_task(expert_config, train_studies, valid_studies)


def evaluate_heldout(out: Path, heldout_root: Path, batch_size: int = 32) -> dict[str, dict]:
    """Score the exported models (read back from OUT) on held-out studies; return metrics by role."""
    manifest = read_manifest(out)
    studies = find_studies(heldout_root)
    results = {}
    for role, entry in manifest.entries().items():
        model = keras.models.model_from_json((out / entry.files["architecture"]).read_text())
        model.load_weights(out / entry.files["weights"])
        examples = task_examples(studies, role)
        labels, scores = predict_study_scores(model, examples, entry.input_size, entry.preprocessing, batch_size)
        if entry.is_router:
            results[role] = router_metrics(labels, scores)
        else:
            # Scored as the service answers: calibrated after the mean over views, at the refitted threshold.
            results[role] = expert_metrics(labels, entry.calibrated(scores), entry.threshold)
        print(f"[{role}] held-out (study level): {results[role]}")
    return results


def record_heldout_metrics(out: Path, results: dict[str, dict], heldout_seed: int) -> None:
    """Add the held-out figures to each manifest entry's provenance metrics."""
    manifest = read_manifest(out)
    for role, metrics in results.items():
        entry = manifest.entry(role)
        heldout = {**metrics, "data": f"synthetic-demo test split, seed {heldout_seed}"}
        provenance = {**entry.provenance, "metrics": {**entry.provenance["metrics"], "heldout": heldout}}
        update_manifest_entry(out, replace(entry, provenance=provenance))


def fit_demo_calibration(out: Path, work: Path, seed: int, recipe: DemoRecipe) -> None:
    """Calibration and operating points of every expert on seed + 2, measured on seed + 4 (no model saw either)."""
    calibration_root = work / f"synthetic-seed{seed + 2}-valid"
    heldout_root = work / f"synthetic-seed{seed + 4}-test"
    generate_dataset(calibration_root, recipe.calibration_studies, seed + 2, "valid", overwrite=True)
    generate_dataset(heldout_root, recipe.calibration_heldout_studies, seed + 4, "test", overwrite=True)
    fit_repository(out, calibration_root, heldout_root)


def build_demo(out: Path, seed: int, work: Path | None = None, recipe: DemoRecipe = DemoRecipe()) -> dict[str, dict]:
    """Generate data, train and export every demo model into OUT, evaluate it; return held-out metrics."""
    tf.config.experimental.enable_op_determinism()
    work_folder = work or Path(tempfile.mkdtemp(prefix="demo-training-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # a fresh manifest: no stale entries survive
    try:
        data_root, heldout_root = generate_demo_data(work_folder, seed, recipe)
        train_demo_models(data_root, out, work_folder, seed, recipe)
        fit_repository_gate(out, training_image_paths(data_root),
                            f"synthetic-demo train split, seed {seed}, {recipe.train_studies} studies")
        fit_demo_calibration(out, work_folder, seed, recipe)
        results = evaluate_heldout(out, heldout_root)
        record_heldout_metrics(out, results, seed + 1)
    finally:
        if work is None:
            shutil.rmtree(work_folder, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: build the demo models; exit 1 when a held-out bar is missed."""
    parser = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("h5"), help="model repository to write (default h5)")
    parser.add_argument("--seed", type=int, default=0, help="training seed; the held-out set uses seed + 1")
    parser.add_argument("--work", type=Path, default=None, help="keep data and logs here (default: a temp folder)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    results = build_demo(args.out, args.seed, args.work)
    missed = [role for role, metrics in results.items() if not meets_bar(role, metrics)]
    print(f"demo models written to {args.out} in {time.perf_counter() - began:.0f} s")
    if missed:
        print(f"error: held-out bars missed by {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def meets_bar(role: str, metrics: dict) -> bool:
    """Return whether held-out metrics meet the demo bars: router accuracy >= 0.97, expert AUROC >= 0.90."""
    if role == ROUTER_TASK:
        return (metrics["accuracy"] or 0.0) >= 0.97
    return (metrics["auroc"] or 0.0) >= 0.90


if __name__ == "__main__":
    sys.exit(main())
