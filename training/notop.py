"""Load local pretrained backbone weights (Keras ImageNet or RadImageNet `*_notop.h5` files)."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras


def list_weight_layer_names(path: str | Path) -> list[str]:
    """Return the layer names stored in a Keras 2 style HDF5 weights file (or a full-model .h5)."""
    with h5py.File(path, "r") as handle:
        group = handle
        if "layer_names" not in handle.attrs and "model_weights" in handle:
            group = handle["model_weights"]
        names = group.attrs.get("layer_names")
        if names is None:
            raise ValueError(
                f"{path} holds no 'layer_names' attribute: it is not a Keras HDF5 weights file. "
                "Pass a *_notop.h5 written by Keras (ImageNet) or RadImageNet."
            )
        return [name.decode("utf8") if isinstance(name, bytes) else str(name) for name in names]


def load_notop_weights(backbone: keras.Model, path: str | Path) -> int:
    """Load pretrained weights into a headless backbone by layer name, skipping mismatches.

    Layers present in both the file and the backbone get the file's weights; layers whose shapes
    differ (e.g. the first conv of a 1-channel model) keep their random weights.

    Returns:
        The number of backbone layers with weights whose name is in the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a weights file, or no layer name matches (wrong backbone).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights file {path} not found. Download the *_notop.h5 file yourself "
            "(nothing is fetched at run time) and pass its path with --weights."
        )
    if path.name.endswith(".weights.h5"):
        backbone.load_weights(path, skip_mismatch=True)
        return sum(1 for layer in backbone.layers if layer.weights)
    file_layers = set(list_weight_layer_names(path))
    matched = [layer.name for layer in backbone.layers if layer.weights and layer.name in file_layers]
    if not matched:
        raise ValueError(
            f"No layer of backbone {backbone.name!r} matches a layer in {path.name}: the file was "
            "written for another architecture. Pick the --backbone the file was made for."
        )
    # Keras warns about each skipped (mismatched) layer; those warnings are left visible.
    backbone.load_weights(path, by_name=True, skip_mismatch=True)
    return len(matched)
