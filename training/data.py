"""MURA-layout training data: studies -> (image path, label) lists, patient-level split, tf.data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from classifiers.body_parts import BODY_PARTS
from classifiers.decoding.imaging import load_image_file, resize_image
from classifiers.preprocessing import check_preprocessing_mode, preprocess_batch
from mura.studies import Study, find_studies

ROUTER_TASK = "router"
TASKS = (ROUTER_TASK, *BODY_PARTS)
MEMORY_CACHE_LIMIT_BYTES = 2 << 30  # decoded images are cached in memory below this size


@dataclass(frozen=True)
class TaskExamples:
    """The images of one task: paths, integer labels (body-part index or 0/1) and their study ids."""

    paths: tuple[str, ...]
    labels: np.ndarray  # (num_images,) int32
    study_ids: tuple[str, ...]


def split_studies(root: str | Path, valid_fraction: float, seed: int) -> tuple[list[Study], list[Study]]:
    """Return (train, valid) studies: ROOT/train + ROOT/valid when both exist, else a patient split.

    Raises:
        ValueError: the folder has no train/ (or studies) or the valid fraction is not in (0, 1).
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "valid").is_dir():
        return find_studies(root / "train"), find_studies(root / "valid")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be between 0 and 1, got {valid_fraction}.")
    source = root / "train" if (root / "train").is_dir() else root
    return split_by_patient(find_studies(source), valid_fraction, seed)


def patient_of(study: Study) -> str:
    """Return the patient id of a study: the name of the folder that holds the study folder."""
    return study.image_paths[0].parent.parent.name


def split_by_patient(studies: list[Study], valid_fraction: float, seed: int) -> tuple[list[Study], list[Study]]:
    """Split studies so that every patient's studies fall on one side; about valid_fraction go to valid."""
    patients = sorted({patient_of(study) for study in studies})
    order = np.random.default_rng(seed).permutation(len(patients))
    num_valid = max(1, round(len(patients) * valid_fraction))
    valid_patients = {patients[index] for index in order[:num_valid]}
    train = [study for study in studies if patient_of(study) not in valid_patients]
    valid = [study for study in studies if patient_of(study) in valid_patients]
    return train, valid


def task_examples(studies: list[Study], task: str) -> TaskExamples:
    """Return the labelled images of a task: all parts for "router", one part's studies for an expert.

    Raises:
        ValueError: unknown task, or no usable study for it.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of: {', '.join(TASKS)} (or all).")
    paths: list[str] = []
    labels: list[int] = []
    study_ids: list[str] = []
    for study in studies:
        if task == ROUTER_TASK and study.body_part in BODY_PARTS:
            label = BODY_PARTS.index(study.body_part)
        elif task != ROUTER_TASK and study.body_part == task and study.label is not None:
            label = study.label
        else:
            continue
        for path in study.image_paths:
            paths.append(str(path))
            labels.append(label)
            study_ids.append(study.study_id)
    if not paths:
        raise ValueError(
            f"No labelled image for task {task!r}: expected MURA folders such as "
            f"{task if task != ROUTER_TASK else 'XR_WRIST'}/patient00001/study1_positive/image1.png."
        )
    return TaskExamples(tuple(paths), np.asarray(labels, dtype=np.int32), tuple(study_ids))


def load_resized_image(path: str | bytes, input_size: tuple[int, int]) -> np.ndarray:
    """Decode one file and resize it with the service's resize: (height, width, 3) uint8."""
    path_text = path.decode("utf8") if isinstance(path, bytes) else path
    return resize_image(load_image_file(path_text), (int(input_size[0]), int(input_size[1])))


def build_augmenter(seed: int) -> keras.Sequential:
    """Lateral flip, rotation up to 30 degrees, 10% shift and zoom; borders filled black."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(30.0 / 360.0, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 3),
        ],
        name="augmentation",
    )


def make_dataset(
    examples: TaskExamples,
    input_size: tuple[int, int],
    preprocessing: str,
    batch_size: int,
    training: bool,
    seed: int = 0,
    binary: bool = False,
) -> tf.data.Dataset:
    """Build batches of (images, labels): (B, H, W, 3) float32 after `preprocessing`.

    Labels are (B,) int32 class indices, or (B, 1) float32 0/1 when `binary` (sigmoid experts).

    Training batches are shuffled and augmented (in the pipeline, never inside the model);
    evaluation batches keep the order of `examples`.
    """
    check_preprocessing_mode(preprocessing)
    height, width = int(input_size[0]), int(input_size[1])

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(lambda p: load_resized_image(p, (height, width)), [path], tf.uint8)
        image.set_shape((height, width, 3))
        return image

    def preprocess(images: tf.Tensor) -> tf.Tensor:
        batch = tf.numpy_function(lambda array: preprocess_batch(array, preprocessing), [images], tf.float32)
        batch.set_shape((None, height, width, 3))
        return batch

    images = tf.data.Dataset.from_tensor_slices(list(examples.paths))
    images = images.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if len(examples.paths) * height * width * 3 <= MEMORY_CACHE_LIMIT_BYTES:
        images = images.cache()
    labels = examples.labels.reshape(-1, 1).astype(np.float32) if binary else examples.labels
    dataset = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels))
    if training:
        dataset = dataset.shuffle(len(examples.paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if training:
        augmenter = build_augmenter(seed)
        dataset = dataset.map(lambda batch, labels: (augmenter(tf.cast(batch, tf.float32), training=True), labels))
    dataset = dataset.map(lambda batch, labels: (preprocess(batch), labels))
    return dataset.prefetch(tf.data.AUTOTUNE)
