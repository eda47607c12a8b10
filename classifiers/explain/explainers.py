"""Class activation maps of an expert's abnormality output: CAM where the head allows it, else Grad-CAM.

The map comes from a 4-D feature layer: by default the last 4-D output of the model, stepping back over
pooling layers at its end (they only lower the map's resolution), or the layer a manifest entry names in
`explanation_layer`. When everything after that layer is global pooling, dropout and one dense layer, the
map is plain CAM (the dense weights of the abnormality unit applied to the features): the same map as
Grad-CAM up to a positive factor, for one forward pass. Anything else gets Grad-CAM (gradients averaged
over the map, one forward and one backward pass).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.backends.keras_files import load_model
from classifiers.backends.tensorflow_backend import configure_devices
from classifiers.errors import ExplanationUnavailable, ModelRepositoryError
from classifiers.explain.graph import combine_maps, graph_explainer
from classifiers.preprocessing import preprocess_batch
from classifiers.repository.entries import ModelEntry

LAYERS_KEY = "explanation_layers"  # optional in a manifest entry: one layer name, or [feature, finer]
FIX_LAYERS = ("Set this entry's explanation_layers in manifest.json to one of them (or remove it) and restart;"
              " scoring without explain=true is unaffected")
CAM = "cam"
GRAD_CAM = "grad-cam"
# Layers that CAM sees through: a global pooling, dropout, then the dense output layer.
_GLOBAL_POOLING = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")
_TRANSPARENT = ("Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "ActivityRegularization")
_SPATIAL_POOLING = ("MaxPooling2D", "AveragePooling2D")
_SAME_GLOBAL_POOLING = {"MaxPooling2D": "GlobalMaxPooling2D", "AveragePooling2D": "GlobalAveragePooling2D"}
_CHAIN_TOLERANCE = 1e-4


def _class_name(layer: Any) -> str:
    """The Keras class name of a layer (Keras 3 and tf_keras alike)."""
    return type(layer).__name__


def _flatten(model: Any) -> list[Any]:
    """The model's layers in order, nested models opened, input layers dropped."""
    layers = []
    for layer in model.layers:
        if _class_name(layer) == "InputLayer":
            continue
        layers += _flatten(layer) if hasattr(layer, "layers") else [layer]
    return layers


def _run(layers: list[Any], tensor: Any) -> Any:
    """Apply layers one after the other in inference mode."""
    for layer in layers:
        tensor = layer(tensor, training=False)
    return tensor


def _chain_of(model: Any, probe: np.ndarray) -> list[Any]:
    """The model as a chain of layers (nested models opened if that still reproduces it), or [] if it is not one."""
    expected = np.asarray(model(probe, training=False))
    for layers in (_flatten(model), [layer for layer in model.layers if _class_name(layer) != "InputLayer"]):
        try:
            output = np.asarray(_run(layers, probe))
        except Exception:  # a layer that needs more than the previous layer's output: not a chain
            continue
        if output.shape == expected.shape and np.allclose(output, expected, atol=_CHAIN_TOLERANCE):
            return layers
    return []


def _feature_index(layers: list[Any], probe: np.ndarray, layer_name: str | None, where: str) -> int:
    """Index of the feature layer in the chain: the named one, or the last 4-D output before pooling."""
    if layer_name:
        names = [layer.name for layer in layers]
        if layer_name not in names:
            raise ExplanationUnavailable(f"{where}: explanation_layers names {layer_name!r}, which is not a layer of"
                                       f" the model; 4-D layers are: {', '.join(_four_d_names(layers, probe))}."
                                       f" {FIX_LAYERS}")
        return names.index(layer_name)
    ranks, tensor = [], probe
    for layer in layers:
        tensor = layer(tensor, training=False)
        ranks.append(len(tensor.shape))
    four_d = [index for index, rank in enumerate(ranks) if rank == 4]
    if not four_d:
        raise ExplanationUnavailable(f"{where}: the model has no 4-D output to explain; name one in explanation_layers")
    index = four_d[-1]
    while index > 0 and _class_name(layers[index]) in _SPATIAL_POOLING and ranks[index - 1] == 4:
        index -= 1
    return index


def _four_d_names(layers: list[Any], probe: np.ndarray) -> list[str]:
    """Names of the chain's layers whose output is 4-D."""
    names, tensor = [], probe
    for layer in layers:
        tensor = layer(tensor, training=False)
        if len(tensor.shape) == 4:
            names.append(layer.name)
    return names


def _cam_weights(head: list[Any], classes: list[str]) -> np.ndarray | None:
    """Per-feature weights of the abnormality evidence when the head is pooling + dense, else None."""
    names = [_class_name(layer) for layer in head]
    kept = [layer for layer, name in zip(head, names, strict=True) if name not in _TRANSPARENT]
    # Max pooling before a global max (or average before a global average) leaves the map the same.
    while len(kept) > 2 and _SAME_GLOBAL_POOLING.get(_class_name(kept[0])) == _class_name(kept[1]):
        kept = kept[1:]
    if len(kept) != 2 or _class_name(kept[0]) not in _GLOBAL_POOLING or _class_name(kept[1]) != "Dense":
        return None
    kernel = np.asarray(kept[1].get_weights()[0], dtype=np.float32)  # (features, units)
    if len(classes) == 2:  # softmax [negative, positive]: the evidence is the difference of the two logits
        return kernel[:, classes.index("positive")] - kernel[:, classes.index("negative")]
    return kernel[:, 0]


def _refine_index(layers: list[Any], probe: np.ndarray, primary: int) -> int | None:
    """The last layer before `primary` whose 4-D output has twice its resolution, if any."""
    shapes, tensor = [], probe
    for layer in layers[:primary + 1]:
        tensor = layer(tensor, training=False)
        shapes.append(tuple(tensor.shape))
    target = shapes[primary]
    for index in range(primary - 1, -1, -1):
        shape = shapes[index]
        if len(shape) == 4 and shape[1] == 2 * target[1] and shape[2] == 2 * target[2]:
            return index
    return None


class Explainer:
    """Maps of one expert's abnormality output on uint8 views, at the feature layers' resolutions.

    The primary map (CAM or Grad-CAM at the feature layer) is multiplied, after upsampling, by a Grad-CAM
    map of the layer at twice its resolution when there is one (`refine`): the coarse map says which
    region is abnormal, the finer one where in it (docs/EXPLANATIONS.md has the measurements).
    """

    def __init__(self, model: Any, input_size: tuple[int, int], preprocessing: str, classes: list[str],
                 layer_names: list[str] | None = None, where: str = "model", allow_cam: bool = True,
                 refine: bool = True) -> None:
        import tensorflow as tf

        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        self.model_version = ""  # set by Explainers: the file whose weights explain
        self.channels = int(model.inputs[0].shape[-1])
        probe = np.random.default_rng(0).uniform(-1, 1, (1, *self.input_size, self.channels)).astype(np.float32)
        layers = _chain_of(model, probe)
        names = list(layer_names or [])
        if not layers:  # a graph with branches (DenseNet, ResNet): a sub-model to the feature layers instead
            self._maps, self.layers, self.method = graph_explainer(
                model, classes, names, refine and not names, allow_cam,
                (*self.input_size, self.channels), where)
            return
        primary = _feature_index(layers, probe, names[0] if names else None, where)
        if len(names) > 1:
            second: int | None = _feature_index(layers, probe, names[1], where)
        else:
            second = _refine_index(layers, probe, primary) if refine and not names else None
        self.layers = [layers[primary].name] + ([layers[second].name] if second is not None else [])
        weights = _cam_weights(layers[primary + 1:], classes) if allow_cam else None
        primary_method = CAM if weights is not None else GRAD_CAM
        self.method = primary_method + (f"*{GRAD_CAM}" if second is not None else "")
        column = classes.index("positive") if len(classes) == 2 else 0
        signature = [tf.TensorSpec((None, *self.input_size, self.channels), tf.float32)]
        split = (second, primary) if second is not None else (primary,)
        self._maps: Callable[[Any], Any] = tf.function(
            lambda batch: _class_maps(tf, layers, split, column, batch, weights), input_signature=signature)

    def maps(self, images: np.ndarray) -> list[np.ndarray]:
        """Maps of (N, H, W, 3) uint8 views at the model's input size: [(N, h, w) primary, (N, 2h, 2w) refine]."""
        batch = preprocess_batch(images, self.preprocessing)
        if self.channels == 1:
            batch = batch[..., :1]
        return [np.asarray(item, dtype=np.float32) for item in self._maps(batch)][::-1]


def _evidence(tf: Any, head: list[Any], features: Any, column: int) -> Any:
    """The abnormality score before the output's sigmoid or softmax, whose gradient does not vanish when the
    probability saturates at 1 (the probability's own gradient underflows to 0 there)."""
    last = head[-1] if head else None
    if last is None or _class_name(last) != "Dense":
        return _run(head, features)[:, column]
    inputs = _run(head[:-1], features)
    logits = tf.matmul(inputs, last.kernel) + (last.bias if last.use_bias else 0.0)
    if logits.shape[-1] == 2:  # softmax [negative, positive]: the positive logit minus the negative one
        return logits[:, column] - logits[:, 1 - column]
    return logits[:, column]


def _class_maps(tf: Any, layers: list[Any], split: tuple[int, ...], column: int, batch: Any,
                cam_weights: np.ndarray | None) -> list[Any]:
    """Maps at the layers `split` (ascending): CAM from the weights when given, else Grad-CAM, in one pass."""
    features, tensor, start = [], batch, 0
    if cam_weights is not None and len(split) == 1:  # plain CAM: a forward pass and no gradient at all
        return [tf.einsum("nhwk,k->nhw", _run(layers[:split[0] + 1], batch), tf.constant(cam_weights))]
    with tf.GradientTape() as tape:
        for index in split:
            tensor = _run(layers[start:index + 1], tensor)
            tape.watch(tensor)
            features.append(tensor)
            start = index + 1
        scores = _evidence(tf, layers[start:], tensor, column)
    return combine_maps(tf, features, tape.gradient(scores, features), cam_weights)


class Explainers:
    """One Explainer per expert, made on first use (or all at start), always from the entry's Keras file.

    The Keras runner's own model is reused; a backend that runs another artefact (the fp32 ONNX export,
    the INT8 model, the shared graph) has the entry's Keras files loaded then, once. `model_version` names
    the file that explains (docs/EXPLANATIONS.md says how its map can differ from the served model's).
    """

    def __init__(self, repository: Path, runners: Mapping[str, Any]) -> None:
        self.repository = repository
        self._runners = runners  # role -> the backend's runner; a Keras runner exposes `.model`
        self._explainers: dict[str, Explainer] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> Explainer:
        """The explainer of an expert entry, made once (thread-safe)."""
        with self._lock:
            if entry.role not in self._explainers:
                model = getattr(self._runners.get(entry.role), "model", None)
                if model is None:
                    model, entry = _load_keras_model(self.repository, entry)
                layers = entry.extra.get(LAYERS_KEY)
                explainer = Explainer(model, entry.input_size, entry.preprocessing, list(entry.classes),
                                      layer_names=[layers] if isinstance(layers, str) else layers,
                                      where=f"{self.repository.name} [{entry.role}]")
                explainer.model_version = entry.version(entry.keras_file)
                self._explainers[entry.role] = explainer
            return self._explainers[entry.role]


def _load_keras_model(repository: Path, entry: ModelEntry) -> tuple[Any, ModelEntry]:
    """The entry's Keras model for a backend that runs none; ExplanationUnavailable when it does not load."""
    configure_devices()  # TensorFlow imported quietly: its C++ start-up notices go to the log at DEBUG
    try:
        return load_model(repository, entry)
    except ModelRepositoryError as error:
        message = f"heatmaps of [{entry.role}] need its Keras files, which do not load: {error}"
        raise ExplanationUnavailable(message) from None
