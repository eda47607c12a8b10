"""Heatmaps of functional Keras models that are not a chain of layers (DenseNet, ResNet: branches, concatenations).

The same maps as classifiers.explain.explainers computes on chains, by a sub-model from the input to the feature
layer(s) and to the input of the final dense layer: CAM when the head after the features is global pooling
(+ dropout) + dense, else Grad-CAM of the score before the output's sigmoid or softmax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from classifiers.errors import ExplanationUnavailable

_GLOBAL_POOLING = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")
_SPATIAL_POOLING = ("MaxPooling2D", "AveragePooling2D")
_TRANSPARENT = ("Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "ActivityRegularization")


def _rank(layer: Any) -> int:
    """Rank of a layer's (first) output tensor, 0 when it has none."""
    output = getattr(layer, "output", None)
    output = output[0] if isinstance(output, (list, tuple)) else output
    return len(output.shape) if output is not None else 0


def _spatial(layer: Any) -> tuple[int, int]:
    """(height, width) of a 4-D layer output."""
    shape = layer.output.shape
    return int(shape[1]), int(shape[2])


def _feature_layers(model: Any, names: list[str], refine: bool, where: str) -> list[Any]:
    """[feature layer] or [finer layer, feature layer]: named, or the last 4-D output before pooling."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    by_name = {layer.name: layer for layer in layers}
    four_d = [layer for layer in layers if _rank(layer) == 4]
    if names:
        missing = [name for name in names if name not in by_name]
        if missing:
            raise ExplanationUnavailable(f"{where}: explanation_layers names {missing[0]!r}, which is not a layer of"
                                       f" the model; 4-D layers are: {', '.join(layer.name for layer in four_d)}."
                                       " Set this entry's explanation_layers in manifest.json to one of them (or"
                                       " remove it) and restart; scoring without explain=true is unaffected")
        chosen = [by_name[name] for name in names[:2]]
        return chosen[::-1] if len(chosen) == 2 else chosen
    if not four_d:
        raise ExplanationUnavailable(f"{where}: the model has no 4-D output to explain; name one in explanation_layers")
    index = len(four_d) - 1
    while index > 0 and type(four_d[index]).__name__ in _SPATIAL_POOLING:
        index -= 1
    feature = four_d[index]
    height, width = _spatial(feature)
    finer = [layer for layer in four_d[:index] if _spatial(layer) == (2 * height, 2 * width)] if refine else []
    return [finer[-1], feature] if finer else [feature]


def _cam_weights(model: Any, feature: Any, classes: list[str]) -> np.ndarray | None:
    """Per-feature weights when everything after the feature layer is global pooling (+ dropout) + dense."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    head = [layer for layer in layers[layers.index(feature) + 1:] if type(layer).__name__ not in _TRANSPARENT]
    if len(head) != 2 or type(head[0]).__name__ not in _GLOBAL_POOLING or type(head[1]).__name__ != "Dense":
        return None
    if head[0].input is not feature.output:
        return None
    kernel = np.asarray(head[1].get_weights()[0], dtype=np.float32)  # (features, units)
    if len(classes) == 2:
        return kernel[:, classes.index("positive")] - kernel[:, classes.index("negative")]
    return kernel[:, 0]


def combine_maps(tf: Any, features: list[Any], gradients: list[Any], cam_weights: np.ndarray | None) -> list[Any]:
    """Grad-CAM map per feature layer (gradients averaged over the map); CAM for the last one when weighted."""
    maps = [tf.reduce_sum(feature * tf.reduce_mean(gradient, axis=(1, 2), keepdims=True), axis=-1)
            for feature, gradient in zip(features, gradients, strict=True)]
    if cam_weights is not None:
        maps[-1] = tf.einsum("nhwk,k->nhw", features[-1], tf.constant(cam_weights))
    return maps


def graph_explainer(model: Any, classes: list[str], names: list[str], refine: bool, allow_cam: bool,
                    input_shape: tuple[int, int, int], where: str) -> tuple[Callable[[Any], Any], list[str], str]:
    """(maps function on a preprocessed batch, feature layer names, method) for a functional model."""
    import tensorflow as tf

    last = model.layers[-1]
    if type(last).__name__ != "Dense":
        raise ExplanationUnavailable(f"{where}: the model does not end in a dense layer, so its abnormality score"
                                   " cannot be explained; name the feature layer in explanation_layers")
    features = _feature_layers(model, names, refine, where)
    weights = _cam_weights(model, features[-1], classes) if allow_cam else None
    keras = __import__(type(model).__module__.split(".")[0])  # keras, or tf_keras for Keras 2 files
    parts = keras.Model(model.inputs, [*(layer.output for layer in features), last.input])
    column = classes.index("positive") if len(classes) == 2 else 0
    kernel, bias = last.kernel, (last.bias if last.use_bias else None)

    def evidence(dense_input: Any) -> Any:
        logits = tf.matmul(dense_input, kernel) + (bias if bias is not None else 0.0)
        return logits[:, column] - logits[:, 1 - column] if logits.shape[-1] == 2 else logits[:, column]

    def maps(batch: Any) -> list[Any]:
        with tf.GradientTape() as tape:
            *feature_maps, dense_input = parts(batch, training=False)
            for feature_map in feature_maps:
                tape.watch(feature_map)
            scores = evidence(dense_input)
        return combine_maps(tf, feature_maps, tape.gradient(scores, feature_maps), weights)

    signature = [tf.TensorSpec((None, *input_shape), tf.float32)]
    method = ("cam" if weights is not None else "grad-cam") + ("*grad-cam" if len(features) == 2 else "")
    return tf.function(maps, input_signature=signature), [layer.name for layer in features[::-1]], method
