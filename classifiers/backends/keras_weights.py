"""Keras 3 `.weights.h5` files read straight into a model's layers: the same result as `load_weights`, faster.

Keras' own `load_weights` finds every layer's variables by walking each layer's attributes (`dir()` of
about a thousand layers for a DenseNet169: 1.2 s of Python per model). The file's layout is simpler:
`layers/<name>/vars/<i>`, where <name> is the layer's class in snake_case, numbered in the order of
`model.layers` (`dense`, `dense_1`, ...), and each layer reads its own variables from the group with its
own `load_own_variables`. Files or models of another shape (layers holding other saveables, such as a
Dropout's seed generator, or custom groups) are left to Keras: `load_weights` decides and explains.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

MODEL_CLASSES = ("Functional", "Sequential")


def load_weights(model: Any, path: Path) -> None:
    """Load a Keras 3 model's weights from `path`: read directly when the file allows it, else with Keras."""
    if not (str(path).endswith(".weights.h5") and _read_directly(model, path)):
        model.load_weights(str(path))


def _read_directly(model: Any, path: Path) -> bool:
    """Load every layer's variables from the file; False (nothing to trust) when the file is not of that shape."""
    try:
        with h5py.File(path, "r") as file:
            if set(file.keys()) != {"layers", "vars"} or len(file["vars"]):
                return False
            return _load_layers(model, file["layers"])
    except (OSError, KeyError, ValueError, TypeError):
        return False


def _load_layers(model: Any, group: h5py.Group) -> bool:
    """Load `model.layers` from `group` (one subgroup per layer, every subgroup used); recurse into models."""
    used: dict[str, int] = {}
    names = []
    for layer in model.layers:
        name = _unique_name(_snake_case(type(layer).__name__), used)
        names.append(name)
        layer_group = group.get(name)
        if not isinstance(layer_group, h5py.Group):
            return False
        if type(layer).__name__ in MODEL_CLASSES:
            if set(layer_group.keys()) != {"layers", "vars"} or len(layer_group["vars"]) \
                    or not _load_layers(layer, layer_group["layers"]):
                return False
            continue
        if set(layer_group.keys()) != {"vars"}:
            return False
        layer.load_own_variables({key: np.asarray(value) for key, value in layer_group["vars"].items()})
    return set(group.keys()) == set(names)


def _snake_case(name: str) -> str:
    """A class name as Keras names its group in the file: `BatchNormalization` -> `batch_normalization`."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_name(name: str, used: dict[str, int]) -> str:
    """`name` the first time, then `name_1`, `name_2`, ... as Keras numbers repeated classes."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name
