"""Pixel preprocessing modes, equal to keras.applications.imagenet_utils.preprocess_input (plus `unit`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def scale_to_minus_one_one(images: np.ndarray) -> np.ndarray:
    """`tf` mode (MobileNet, Inception, EfficientNetV2...): [0, 255] -> [-1, 1]."""
    return images / np.float32(127.5) - np.float32(1.0)


def normalize_imagenet_torch(images: np.ndarray) -> np.ndarray:
    """`torch` mode (DenseNet): [0, 1] then ImageNet mean/std per RGB channel."""
    return (images / np.float32(255.0) - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB


def center_imagenet_caffe(images: np.ndarray) -> np.ndarray:
    """`caffe` mode (VGG, ResNet50): RGB -> BGR, then subtract the ImageNet BGR mean."""
    return images[..., ::-1] - CAFFE_MEAN_BGR


def scale_to_unit(images: np.ndarray) -> np.ndarray:
    """`unit` mode: [0, 255] -> [0, 1]."""
    return images / np.float32(255.0)


PREPROCESSING_MODES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tf": scale_to_minus_one_one,
    "torch": normalize_imagenet_torch,
    "caffe": center_imagenet_caffe,
    "unit": scale_to_unit,
}


# Each mode as an affine map per channel after an optional RGB -> BGR flip: (x - mean) / scale, the form a
# runtime can compile into the model itself (classifiers/openvino_backend.py), so uint8 views go straight in.
AFFINE_FORMS: dict[str, tuple[bool, np.ndarray, np.ndarray]] = {
    "tf": (False, np.full(3, 127.5, np.float32), np.full(3, 127.5, np.float32)),
    "torch": (False, 255 * IMAGENET_MEAN_RGB, 255 * IMAGENET_STD_RGB),
    "caffe": (True, CAFFE_MEAN_BGR, np.ones(3, np.float32)),
    "unit": (False, np.zeros(3, np.float32), np.full(3, 255.0, np.float32)),
}


def check_preprocessing_mode(mode: str) -> str:
    """Return `mode` if it is known, else raise ValueError listing the valid modes."""
    if mode not in PREPROCESSING_MODES:
        valid = ", ".join(sorted(PREPROCESSING_MODES))
        raise ValueError(f"unknown preprocessing mode {mode!r}; valid modes: {valid}")
    return mode


# uint8 input in a mode whose output channel c depends only on input channel c, through float arithmetic: a table
# of the mode's own float32 result for each of the 256 values per channel gives the same numbers. For `torch`
# (DenseNet, the models this service runs) numpy broadcasts over a trailing axis of 3 slowly: the table takes
# 0.2 ms instead of 0.65-1.3 ms per 224x224 view (docs/benchmarks/HISTORY.md).
UINT8_TABLES = {"torch": normalize_imagenet_torch(np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1))}


def preprocess_batch(images: np.ndarray, mode: str) -> np.ndarray:
    """Preprocess a batch of RGB images for a model.

    Args:
        images: (N, H, W, 3) uint8 or float array in [0, 255], RGB channel order.
        mode: one of PREPROCESSING_MODES ("tf", "torch", "caffe", "unit").

    Returns:
        (N, H, W, 3) float32 array, contiguous.
    """
    transform = PREPROCESSING_MODES[check_preprocessing_mode(mode)]
    table = UINT8_TABLES.get(mode)
    if table is not None and images.dtype == np.uint8 and images.shape[-1:] == (3,):
        result = np.empty(images.shape, dtype=np.float32)
        for channel in range(3):
            result[..., channel] = table[images[..., channel], channel]
        return result
    return np.ascontiguousarray(transform(images.astype(np.float32, copy=False)), dtype=np.float32)
