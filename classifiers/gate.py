"""The out-of-domain gate: is a view like the radiographs the models were trained on?

Each view becomes a small vector of image statistics (colour, intensity histogram, contrast, edges, the
background's darkness at the border) and the router's own doubt (entropy, top probability); its squared
Mahalanobis distance to the same vectors of the training views is the view's score. Statistics (mean,
inverse covariance with shrinkage, threshold) are fitted by training (`fit_gate`) on its training views
and stored in the model repository as `gate.npz`, recorded in manifest.json with its sha256. The
threshold is a high quantile of the scores of views held apart from the fit (not from any evaluation).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from classifiers.decoding.imaging import resize_image
from classifiers.errors import ModelRepositoryError

GATE_KEY = "gate"  # manifest.json: {"file": "gate.npz", "sha256": ..., "method": ..., "fitted_on": ...}
GATE_FILE = "gate.npz"
METHOD = "mahalanobis on image statistics + router entropy"
STATISTICS_SIZE = 64  # views are looked at as 64x64 for the statistics
HISTOGRAM_BINS = 8
SHRINKAGE = 0.05
THRESHOLD_QUANTILE = 0.998
NO_GATE_WARNING = ("no out-of-domain gate statistics (gate.npz): every view is scored, photographs and"
                   " documents included; fit them with python -m training.fit_gate REPOSITORY")


def view_features(image: Image.Image, router_probabilities: np.ndarray) -> np.ndarray:
    """(F,) float64 statistics of one view (8-bit L or RGB) and its router output."""
    small = resize_image(image, (STATISTICS_SIZE, STATISTICS_SIZE)).astype(np.float64) / 255.0  # (64, 64, 3) in [0, 1]
    gray = small.mean(axis=2)
    colour = np.abs(small - gray[..., None]).mean()
    histogram = np.histogram(gray, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / gray.size
    edges = np.asarray(Image.fromarray((gray * 255).astype(np.uint8)).filter(ImageFilter.FIND_EDGES),
                       dtype=np.float64) / 255.0
    border = np.concatenate([gray[:4].ravel(), gray[-4:].ravel(), gray[:, :4].ravel(), gray[:, -4:].ravel()])
    centre = gray[16:48, 16:48]
    probabilities = np.clip(np.asarray(router_probabilities, dtype=np.float64), 1e-9, 1.0)
    entropy = float(-(probabilities * np.log(probabilities)).sum())
    return np.array([np.log1p(100 * colour), gray.mean(), gray.std(), *np.sqrt(histogram), edges[1:-1, 1:-1].mean(),
                     edges[1:-1, 1:-1].std(), border.mean(), centre.mean() - border.mean(), np.abs(np.diff(gray,
                     axis=1)).mean(), entropy, float(probabilities.max())])


@dataclass(frozen=True)
class Gate:
    """Fitted statistics: mean, inverse covariance and the score above which a view is flagged."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distances of (N, F) feature vectors."""
        centred = np.atleast_2d(features) - self.mean
        return np.einsum("nf,fg,ng->n", centred, self.precision, centred)

    def save(self, path: Path) -> None:
        """Write the statistics as one .npz file."""
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, precision=self.precision, threshold=np.array(self.threshold))
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Gate:
        """Read statistics written by `save`; ModelRepositoryError when the file is missing or damaged."""
        try:
            with np.load(path, allow_pickle=False) as data:
                gate = cls(np.asarray(data["mean"], np.float64), np.asarray(data["precision"], np.float64),
                           float(data["threshold"]))
        except (OSError, KeyError, ValueError) as error:
            raise ModelRepositoryError(f"{path}: the gate statistics cannot be read ({type(error).__name__});"
                                       " refit them with python -m training.fit_gate") from None
        if gate.mean.ndim != 1 or gate.precision.shape != (len(gate.mean), len(gate.mean)):
            raise ModelRepositoryError(f"{path}: the gate statistics have the wrong shape; refit them with"
                                       " python -m training.fit_gate")
        return gate


def fit_gate(fit_features: np.ndarray, calibration_features: np.ndarray) -> Gate:
    """Fit mean and shrunk covariance on one set of views; set the threshold on another."""
    mean = fit_features.mean(axis=0)
    covariance = np.cov(fit_features, rowvar=False)
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.diag(np.diag(covariance)) \
        + 1e-6 * np.eye(len(mean))
    gate = Gate(mean, np.linalg.inv(covariance), 0.0)
    threshold = float(np.quantile(gate.scores(calibration_features), THRESHOLD_QUANTILE))
    return Gate(mean, gate.precision, threshold)


def load_repository_gate(folder: Path, manifest_extra: dict[str, Any]) -> Gate | None:
    """The repository's gate, checked against its recorded sha256; None when the repository has none."""
    from classifiers.repository.entries import sha256_file

    record = manifest_extra.get(GATE_KEY)
    if record is None:
        return None
    path = folder / str(record.get("file", GATE_FILE))
    if not path.is_file():
        raise ModelRepositoryError(f"{path}: gate statistics missing; copy the file back or refit them with"
                                   " python -m training.fit_gate")
    if sha256_file(path) != record.get("sha256"):
        raise ModelRepositoryError(f"{path}: sha256 mismatch for the gate statistics; the file is corrupt or was"
                                   " replaced: restore it or refit with python -m training.fit_gate")
    return Gate.load(path)


def flag_views(gate: Gate, images: Sequence[Image.Image], router_probabilities: np.ndarray) -> np.ndarray:
    """(N,) scores of the views; flagged where above `gate.threshold`."""
    features = np.stack([view_features(image, probabilities)
                         for image, probabilities in zip(images, router_probabilities, strict=True)])
    return gate.scores(features)
