"""Class-prevalence loss weights (MURA paper) and the weighted binary cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops


def prevalence_weights(labels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Return (w_positive, w_negative) = (N / (A + N), A / (A + N)), A abnormal and N normal counts.

    Raises:
        ValueError: the labels are not all 0 or 1, or one class is missing.
    """
    label_array = np.asarray(labels).reshape(-1)
    if label_array.size == 0 or not np.isin(label_array, (0, 1)).all():
        raise ValueError("Labels must be a non-empty sequence of 0 (normal) and 1 (abnormal).")
    abnormal = int(label_array.sum())
    normal = int(label_array.size - abnormal)
    if abnormal == 0 or normal == 0:
        raise ValueError(f"Need both classes to weight the loss; got {abnormal} abnormal and {normal} normal.")
    total = abnormal + normal
    return normal / total, abnormal / total


def balanced_class_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> dict[int, float]:
    """Return {class: total / (num_classes * count)}, the usual weights for an unbalanced router.

    Raises:
        ValueError: a class has no example.
    """
    counts = np.bincount(np.asarray(labels, dtype=int).reshape(-1), minlength=num_classes)
    if (counts == 0).any():
        missing = [index for index, count in enumerate(counts) if count == 0]
        raise ValueError(f"Classes {missing} have no training example; every class needs some.")
    total = counts.sum()
    return {index: float(total / (num_classes * count)) for index, count in enumerate(counts)}


@keras.saving.register_keras_serializable(package="training")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with weight w_positive on abnormal and w_negative on normal examples."""

    def __init__(
        self,
        positive_weight: float,
        negative_weight: float,
        epsilon: float = 1e-7,
        name: str = "weighted_binary_crossentropy",
        **kwargs: object,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.positive_weight = float(positive_weight)
        self.negative_weight = float(negative_weight)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        """Return the per-example loss, shape (batch,)."""
        y_true = ops.cast(ops.reshape(y_true, (-1,)), y_pred.dtype)
        y_pred = ops.clip(ops.reshape(y_pred, (-1,)), self.epsilon, 1.0 - self.epsilon)
        positive_term = self.positive_weight * y_true * ops.log(y_pred)
        negative_term = self.negative_weight * (1.0 - y_true) * ops.log(1.0 - y_pred)
        return -(positive_term + negative_term)

    def get_config(self) -> dict:
        """Return the constructor arguments, so the loss can be rebuilt from a config."""
        config = super().get_config()
        config.update(
            positive_weight=self.positive_weight,
            negative_weight=self.negative_weight,
            epsilon=self.epsilon,
        )
        return config
