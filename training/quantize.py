"""INT8 quantization of an ONNX export (NNCF, for OpenVINO) and its accuracy guard.

The INT8 model is calibrated on validation images and then compared with its fp32 ONNX model on the same
images: routing agreement for the router, mean absolute difference of the probabilities, and AUROC where the
studies are labelled. An entry that fails keeps its fp32 model (training.optimize writes the figures).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from classifiers.backends.onnx_backend import OnnxModel
from classifiers.body_parts import ROUTER
from classifiers.decoding.imaging import load_image_file, resize_image
from mura.metrics import roc_auc
from mura.studies import find_studies

MAX_AUROC_DROP = 0.005
MIN_ROUTING_AGREEMENT = 0.995
# Without labels there is no AUROC to protect: the probabilities themselves must stay this close.
MAX_MEAN_ABS_DIFFERENCE_UNLABELLED = 0.02
CALIBRATION_BATCH_SIZE = 8


@dataclass
class ValidationViews:
    """Decoded views of a validation folder, with what is known of each view's study."""

    images: list[Image.Image]
    study_ids: list[str]
    body_parts: list[str | None]
    labels: list[int | None]
    _resized: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        """Every view resized once to `size`: (num_views, H, W, 3) uint8."""
        if size not in self._resized:
            self._resized[size] = np.stack([resize_image(image, size) for image in self.images])
        return self._resized[size]

    def indices_for(self, role: str) -> np.ndarray:
        """The views an entry is checked on: all for the router; an expert's own body part when known."""
        everything = np.arange(len(self.images))
        if role == ROUTER:
            return everything
        own = np.array([index for index, part in enumerate(self.body_parts) if part == role], dtype=int)
        return own if len(own) else everything


def load_validation_views(folder: Path, max_views_per_part: int = 60) -> ValidationViews:
    """Read up to `max_views_per_part` views per body part (all parts alike when unknown) from a study folder.

    Raises:
        mura.studies.StudySourceError: the folder holds no studies.
    """
    taken: dict[str | None, int] = {}
    views = ValidationViews([], [], [], [])
    for study in find_studies(folder):
        if taken.get(study.body_part, 0) >= max_views_per_part:
            continue
        for path in study.image_paths:
            views.images.append(load_image_file(path))
            views.study_ids.append(study.study_id)
            views.body_parts.append(study.body_part)
            views.labels.append(study.label)
        taken[study.body_part] = taken.get(study.body_part, 0) + len(study.image_paths)
    return views


def calibration_batches(model: OnnxModel, pixels: np.ndarray, max_views: int) -> list[np.ndarray]:
    """Preprocessed float32 batches of at most CALIBRATION_BATCH_SIZE views, `max_views` in all, evenly drawn."""
    chosen = np.linspace(0, len(pixels) - 1, min(max_views, len(pixels))).round().astype(int)
    batches = []
    for start in range(0, len(chosen), CALIBRATION_BATCH_SIZE):
        batches.append(model.prepare(pixels[chosen[start : start + CALIBRATION_BATCH_SIZE]]))
    return batches


def quantize_openvino(fp32_path: Path, int8_path: Path, batches: Sequence[np.ndarray]) -> None:
    """Write the NNCF INT8 model of the fp32 ONNX model `fp32_path` in OpenVINO's format (`int8_path` .xml + .bin).

    NNCF's post-training quantization (performance preset: symmetric int8 weights, per channel, and activations),
    calibrated on every view of `batches`. Measured against ONNX Runtime's static INT8 on DenseNet169 it was
    faster and closer to fp32 (docs/PERFORMANCE.md).
    """
    import nncf
    import openvino

    nncf.set_log_level(logging.ERROR)  # its notices are not the user's business
    model = openvino.Core().read_model(str(fp32_path))
    views = [batch[index : index + 1] for batch in batches for index in range(len(batch))]
    with contextlib.redirect_stdout(io.StringIO()):  # nor its progress bars: training.optimize logs each entry
        quantized = nncf.quantize(model, nncf.Dataset(views), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(views))
    openvino.save_model(quantized, str(int8_path), compress_to_fp16=False)


def guard_figures(role: str, column: int, fp32: np.ndarray, int8: np.ndarray,
                  views: ValidationViews | None, indices: np.ndarray) -> dict[str, Any]:
    """Compare INT8 with fp32 outputs (num_views, K) on views `indices`; return the figures and the verdict.

    `column` is an expert's P(abnormal) output column; the router's figures need no `views`."""
    figures: dict[str, Any] = {"num_views": int(len(indices))}
    if role == ROUTER:
        agreement = float(np.mean(fp32.argmax(axis=1) == int8.argmax(axis=1)))
        figures["routing_agreement"] = agreement
        figures["mean_abs_difference"] = float(np.abs(fp32 - int8).mean())
        figures["passed"] = agreement >= MIN_ROUTING_AGREEMENT
        return figures
    figures["mean_abs_difference"] = float(np.abs(fp32[:, column] - int8[:, column]).mean())
    study_ids = [views.study_ids[index] for index in indices]
    labels = [views.labels[index] for index in indices]
    aurocs = _study_aurocs(study_ids, labels, fp32[:, column], int8[:, column])
    if aurocs is None:
        figures["auroc"] = None
        figures["passed"] = figures["mean_abs_difference"] <= MAX_MEAN_ABS_DIFFERENCE_UNLABELLED
        return figures
    figures["num_studies"], figures["auroc_fp32"], figures["auroc_int8"] = aurocs
    figures["passed"] = figures["auroc_fp32"] - figures["auroc_int8"] <= MAX_AUROC_DROP
    return figures


def _study_aurocs(study_ids: list[str], labels: list[int | None], fp32: np.ndarray,
                  int8: np.ndarray) -> tuple[int, float, float] | None:
    """Study-level AUROC (mean of the views' probabilities) of fp32 and INT8; None without both labels."""
    order = sorted({study for study, label in zip(study_ids, labels, strict=True) if label is not None})
    if not order:
        return None
    position = {study: number for number, study in enumerate(order)}
    study_labels = np.zeros(len(order), dtype=int)
    sums = np.zeros((2, len(order)))
    counts = np.zeros(len(order))
    for view, (study, label) in enumerate(zip(study_ids, labels, strict=True)):
        if label is None:
            continue
        study_labels[position[study]] = label
        sums[:, position[study]] += (fp32[view], int8[view])
        counts[position[study]] += 1
    if len(set(study_labels.tolist())) < 2:
        return None
    means = sums / counts
    return len(order), roc_auc(study_labels, means[0]), roc_auc(study_labels, means[1])
