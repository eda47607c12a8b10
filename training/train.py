"""Train the router or a body-part expert on a MURA-layout folder and export it to a model repository.

    python -m training.train --data MURA-v1.1 --task XR_WRIST --backbone densenet169 \\
        --input-size 320 --epochs 30 --weights densenet169_notop.h5 --freeze none --out h5/
"""

from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from classifiers.backends.keras_files import without_training_config
from classifiers.body_parts import BODY_PARTS
from classifiers.repository.entries import ModelEntry
from classifiers.repository.manifest import make_model_entry, update_manifest_entry
from mura.studies import Study
from training.backbones import (
    BACKBONES,
    DEFAULT_PREPROCESSING,
    FREEZE_MODES,
    build_model,
)
from training.data import ROUTER_TASK, TASKS, TaskExamples, make_dataset, split_studies, task_examples
from training.evaluation import (
    expert_metrics,
    plot_training_curves,
    predict_study_scores,
    router_metrics,
    youden_threshold,
)
from training.losses import (
    WeightedBinaryCrossentropy,
    balanced_class_weights,
    prevalence_weights,
)
from training.operating_points import StudyScores, fit_trained_expert

THRESHOLD_METHOD = "youden_j_on_validation_studies"


@dataclass(frozen=True)
class TrainingConfig:
    """Every option of one training run; the CLI maps one flag to each field."""

    data: Path
    task: str = "all"
    backbone: str = "densenet169"
    input_size: int = 320
    epochs: int = 30
    batch_size: int = 8
    weights: str | None = None
    init_weights: str | None = None
    freeze: str = "none"
    out: Path = Path("h5")
    logs: Path | None = None
    seed: int = 0
    valid_fraction: float = 0.1
    learning_rate: float = 1e-4
    early_stopping_patience: int = 5
    plateau_patience: int = 1
    preprocessing: str | None = None
    data_name: str | None = None
    verbose: int = 2

    @property
    def preprocessing_mode(self) -> str:
        """Return the preprocessing mode: the explicit one, else the backbone's default."""
        return self.preprocessing or DEFAULT_PREPROCESSING[self.backbone.lower()]

    @property
    def log_folder(self) -> Path:
        """Return the folder for CSV logs, curves and checkpoints (default OUT/logs)."""
        return self.logs or self.out / "logs"


def compile_for_task(model: keras.Model, task: str, train_labels: np.ndarray, learning_rate: float) -> dict | None:
    """Compile with Adam and the task's loss; return the router's class weights (None for experts)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    if task == ROUTER_TASK:
        model.compile(
            optimizer=optimizer,
            loss="sparse_categorical_crossentropy",
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        weights = balanced_class_weights(train_labels, len(BODY_PARTS))
        return weights if max(weights.values()) / min(weights.values()) > 1.1 else None
    positive_weight, negative_weight = prevalence_weights(train_labels)
    model.compile(
        optimizer=optimizer,
        loss=WeightedBinaryCrossentropy(positive_weight, negative_weight),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )
    return None


def build_callbacks(config: TrainingConfig, role: str, checkpoint: Path) -> list[keras.callbacks.Callback]:
    """Return the plateau LR decay (/10), early stopping, best checkpoint and CSV log callbacks."""
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.1, patience=config.plateau_patience, min_lr=1e-7, verbose=1
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience, verbose=1),
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True, save_weights_only=True),
        keras.callbacks.CSVLogger(config.log_folder / f"{role}.csv"),
    ]


def fit_model(
    config: TrainingConfig, role: str, train_examples: TaskExamples, valid_examples: TaskExamples
) -> tuple[keras.Model, int]:
    """Build, compile and fit one model; return it with the best (lowest val loss) weights and epochs run.

    `role` names the log files; "router" trains the 7-way softmax, any other role a 1-unit sigmoid.
    """
    keras.utils.set_random_seed(config.seed)
    size = (config.input_size, config.input_size)
    binary = role != ROUTER_TASK
    model = build_model(config.backbone, size, 1 if binary else len(BODY_PARTS), config.weights, config.freeze)
    if config.init_weights:
        model.load_weights(config.init_weights)
    class_weight = compile_for_task(model, role, train_examples.labels, config.learning_rate)
    mode = config.preprocessing_mode
    train_data = make_dataset(train_examples, size, mode, config.batch_size, True, config.seed, binary)
    valid_data = make_dataset(valid_examples, size, mode, config.batch_size, False, config.seed, binary)
    config.log_folder.mkdir(parents=True, exist_ok=True)
    checkpoint = config.log_folder / f"{role}.best.weights.h5"
    print(f"[{role}] {len(train_examples.paths)} training / {len(valid_examples.paths)} validation images")
    history = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=config.epochs,
        class_weight=class_weight,
        shuffle=False,  # the dataset shuffles itself, with the run's seed
        callbacks=build_callbacks(config, role, checkpoint),
        verbose=config.verbose,
    )
    model.load_weights(checkpoint)
    checkpoint.unlink()
    plot_training_curves(config.log_folder / f"{role}.csv", config.log_folder, role)
    return model, len(history.epoch)


def train_task(config: TrainingConfig, train_studies: list[Study], valid_studies: list[Study]) -> ModelEntry:
    """Train one task, export <role>.json + <role>.weights.h5 into OUT and update its manifest entry.

    Returns:
        The manifest entry written for the task.
    """
    role = config.task
    train_examples = task_examples(train_studies, role)
    valid_examples = task_examples(valid_studies, role)
    model, epochs_run = fit_model(config, role, train_examples, valid_examples)
    size = (config.input_size, config.input_size)
    binary = role != ROUTER_TASK
    labels, scores = predict_study_scores(model, valid_examples, size, config.preprocessing_mode, config.batch_size)
    threshold = youden_threshold(labels, scores) if binary else None
    metrics = expert_metrics(labels, scores, threshold) if binary else router_metrics(labels, scores)
    print(f"[{role}] validation (study level): {metrics}" + (f", threshold {threshold:.4f}" if binary else ""))
    provenance = make_provenance(config, epochs_run, len(train_examples.paths), metrics)
    entry = export_model(model, config, role, threshold, provenance)
    if not binary:
        return entry
    # Calibration and the two operating points, on the same validation studies (training.operating_points).
    validation = StudyScores(scores[:, entry.positive_column], labels)
    return fit_trained_expert(config.out, entry, validation, f"validation studies of {config.data_name or config.data}")


def make_provenance(config: TrainingConfig, epochs_run: int, num_train_images: int, metrics: dict) -> dict:
    """Return the manifest provenance: data, date, recipe and validation metrics."""
    provenance = {
        "data": config.data_name or str(config.data),
        "trained_at": datetime.date.today().isoformat(),
        "backbone": config.backbone.lower(),
        "weights": Path(config.weights).name if config.weights else "none",
        "init_weights": Path(config.init_weights).name if config.init_weights else "none",
        "freeze": config.freeze,
        "epochs": epochs_run,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "num_train_images": num_train_images,
        "metrics": {"validation": metrics},
    }
    if config.task != ROUTER_TASK:
        provenance["threshold_method"] = THRESHOLD_METHOD
    return provenance


def export_model(
    model: keras.Model, config: TrainingConfig, role: str, threshold: float | None, provenance: dict
) -> ModelEntry:
    """Write <role>.json and <role>.weights.h5 into OUT and add their entry to OUT/manifest.json."""
    config.out.mkdir(parents=True, exist_ok=True)
    files = {"architecture": f"{role}.json", "weights": f"{role}.weights.h5"}
    (config.out / files["architecture"]).write_text(without_training_config(model.to_json()))
    model.save_weights(config.out / files["weights"])
    classes = list(BODY_PARTS) if role == ROUTER_TASK else ["abnormal"]
    size = (config.input_size, config.input_size)
    entry = make_model_entry(config.out, role, files, classes, size, config.preprocessing_mode, threshold,
                             provenance)
    update_manifest_entry(config.out, entry)
    return entry


def train_tasks(config: TrainingConfig) -> dict[str, dict]:
    """Train config.task, or the router and all seven experts for "all"; return entries by role."""
    tasks = list(TASKS) if config.task == "all" else [config.task]
    train_studies, valid_studies = split_studies(config.data, config.valid_fraction, config.seed)
    entries = {task: train_task(replace(config, task=task), train_studies, valid_studies) for task in tasks}
    if config.task == "all":  # the out-of-domain gate, fitted on the same training views as the models
        from training.fit_gate import fit_repository_gate

        paths = [path for study in train_studies for path in study.image_paths]
        fit_repository_gate(config.out, paths, f"training images of {config.data_name or config.data}")
    return entries


def parse_args(argv: list[str] | None = None) -> TrainingConfig:
    """Parse the command line into a TrainingConfig."""
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="MURA-layout folder (with train/ and valid/)")
    parser.add_argument("--task", default="all", choices=[*TASKS, "all"])
    parser.add_argument("--backbone", default="densenet169", type=str.lower, choices=list(BACKBONES))
    parser.add_argument("--input-size", type=int, default=320, help="square input side in pixels")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--weights", default="none", help="'none' or a local *_notop.h5 file")
    parser.add_argument("--init-weights", default=None, help="whole-model .weights.h5 to start from (same model)")
    parser.add_argument("--freeze", default="none", help=f"one of {', '.join(FREEZE_MODES)}")
    parser.add_argument("--out", type=Path, default=Path("h5"), help="model repository to write")
    parser.add_argument("--logs", type=Path, default=None, help="CSV logs and curves (default OUT/logs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="patients held out without valid/")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    parser.add_argument("--preprocessing", default=None, help="override the backbone's preprocessing mode")
    parser.add_argument("--data-name", default=None, help="provenance name of the data, e.g. MURA-v1.1")
    args = parser.parse_args(argv)
    return TrainingConfig(
        data=args.data,
        task=args.task,
        backbone=args.backbone,
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        weights=None if args.weights.lower() == "none" else args.weights,
        init_weights=args.init_weights,
        freeze=args.freeze,
        out=args.out,
        logs=args.logs,
        seed=args.seed,
        valid_fraction=args.valid_fraction,
        learning_rate=args.learning_rate,
        early_stopping_patience=args.patience,
        preprocessing=args.preprocessing,
        data_name=args.data_name,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit 2 with a message (no traceback) on bad input."""
    config = parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    try:
        train_tasks(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
