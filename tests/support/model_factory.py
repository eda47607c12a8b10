"""Tiny real Keras models (a few KB) and model repositories for tests, in every supported format."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.body_parts import BODY_PARTS
from classifiers.repository.entries import Manifest
from classifiers.repository.manifest import make_model_entry, write_manifest

KERAS3_FORMATS = ("json+weights.h5", "keras", "h5")
TF_KERAS_FORMATS = ("tf_keras:json+h5", "tf_keras:h5")
ALL_FORMATS = KERAS3_FORMATS + TF_KERAS_FORMATS


def _keras(library: str = "keras") -> Any:
    """The Keras module of `library`: Keras 3 ("keras") or Keras 2 ("tf_keras")."""
    if library == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras


def build_tiny_router(input_size: tuple[int, int] = (32, 32), library: str = "keras", seed: int = 0) -> Any:
    """A conv -> pool -> 7-way softmax router with random weights."""
    return _build_tiny(input_size, 7, "softmax", library, seed)


def build_tiny_expert(input_size: tuple[int, int] = (32, 32), two_way: bool = False, library: str = "keras",
                      seed: int = 1) -> Any:
    """A conv -> pool -> 1-unit sigmoid (or 2-way softmax) expert with random weights."""
    return _build_tiny(input_size, 2 if two_way else 1, "softmax" if two_way else "sigmoid", library, seed)


def _build_tiny(input_size: tuple[int, int], units: int, activation: str, library: str, seed: int) -> Any:
    """Build a tiny CNN in Keras 3 or tf_keras."""
    keras = _keras(library)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(*input_size, 3))
    features = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    features = keras.layers.BatchNormalization()(features)
    features = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(units, activation=activation)(features)
    return keras.Model(inputs, outputs)


def build_linear_model(kernel: np.ndarray, bias: np.ndarray, activation: str,
                       input_size: tuple[int, int] = (32, 32), library: str = "keras") -> Any:
    """GlobalAveragePooling -> Dense with fixed weights: output = activation(mean_rgb @ kernel + bias)."""
    keras = _keras(library)
    inputs = keras.Input(shape=(*input_size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(kernel.shape[1], activation=activation)
    outputs = dense(pooled)
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.asarray(kernel, dtype=np.float32), np.asarray(bias, dtype=np.float32)])
    return model


def save_model(model: Any, folder: Path, stem: str, file_format: str) -> dict[str, str]:
    """Save `model` under `folder` in `file_format`; return the manifest `files` mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    layout = file_format.split(":")[-1]
    if layout == "json+weights.h5":
        (folder / f"{stem}.json").write_text(model.to_json())
        model.save_weights(str(folder / f"{stem}.weights.h5"))
        return {"architecture": f"{stem}.json", "weights": f"{stem}.weights.h5"}
    if layout == "json+h5":
        (folder / f"{stem}.json").write_text(model.to_json())
        model.save_weights(str(folder / f"{stem}.h5"))
        return {"architecture": f"{stem}.json", "weights": f"{stem}.h5"}
    if layout in ("h5", "keras"):
        model.save(str(folder / f"{stem}.{layout}"))
        return {"model": f"{stem}.{layout}"}
    raise ValueError(f"unknown format {file_format!r}; valid: {', '.join(ALL_FORMATS)}")


def write_repository(folder: Path, router: Any, experts: Mapping[str, Any], file_format: str = "json+weights.h5",
                     preprocessing: str = "unit", thresholds: Mapping[str, float] | None = None) -> Path:
    """Save a router and seven experts into `folder` with a manifest.json."""
    router_size = tuple(router.inputs[0].shape[1:3])
    files = save_model(router, folder, "router", file_format)
    router_entry = make_model_entry(folder, "router", files, BODY_PARTS, router_size, preprocessing,
                                    provenance={"data": "tiny-test"})
    expert_entries = {}
    for body_part in BODY_PARTS:
        expert = experts[body_part]
        files = save_model(expert, folder, body_part, file_format)
        units = int(expert.outputs[0].shape[-1])
        expert_entries[body_part] = make_model_entry(
            folder, body_part, files, ["abnormal"] if units == 1 else ["negative", "positive"],
            tuple(expert.inputs[0].shape[1:3]), preprocessing,
            threshold=(thresholds or {}).get(body_part, 0.5), provenance={"data": "tiny-test"},
        )
    write_manifest(folder, Manifest(router=router_entry, experts=expert_entries))
    return folder


def write_tiny_repository(folder: Path, input_size: tuple[int, int] = (32, 32),
                          file_format: str = "json+weights.h5") -> Path:
    """A complete repository of random tiny models: router + seven experts + manifest.json."""
    library = "tf_keras" if file_format.startswith("tf_keras") else "keras"
    router = build_tiny_router(input_size, library)
    experts = {part: build_tiny_expert(input_size, two_way=index % 2 == 1, library=library, seed=index + 1)
               for index, part in enumerate(BODY_PARTS)}
    return write_repository(folder, router, experts, file_format)
