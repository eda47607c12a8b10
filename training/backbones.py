"""Backbones by name, the classification heads and the freeze modes used for training."""

from __future__ import annotations

from collections.abc import Callable

import keras

from training.notop import load_notop_weights

InputShape = tuple[int, int, int]


def build_small_cnn(input_shape: InputShape) -> keras.Model:
    """Build the small demo CNN (about 200k parameters) as a headless feature extractor.

    A stride-2 stem then four conv-BN-ReLU-pool blocks: the output is 1/32 of the input side.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    features = keras.layers.Conv2D(16, 5, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    features = keras.layers.BatchNormalization(name="stem_bn")(features)
    features = keras.layers.Activation("relu", name="stem_relu")(features)
    for block, filters in enumerate((32, 64, 96, 128), start=1):
        features = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(features)
        features = keras.layers.BatchNormalization(name=f"block{block}_bn")(features)
        features = keras.layers.Activation("relu", name=f"block{block}_relu")(features)
        features = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(features)
    return keras.Model(inputs, features, name="smallcnn")


def _application(constructor: Callable[..., keras.Model], **options: object) -> Callable:
    """Wrap a keras.applications constructor: headless, random weights, never downloads."""

    def build(input_shape: InputShape) -> keras.Model:
        return constructor(include_top=False, weights=None, input_shape=input_shape, **options)

    return build


applications = keras.applications

# Name -> builder taking (height, width, 3) and returning a headless model (a feature map).
BACKBONES: dict[str, Callable[[InputShape], keras.Model]] = {
    "densenet169": _application(applications.DenseNet169),
    "densenet121": _application(applications.DenseNet121),
    "resnet50": _application(applications.ResNet50),
    "vgg19": _application(applications.VGG19),
    "efficientnetb0": _application(applications.EfficientNetB0),
    "mobilenet": _application(applications.MobileNet),
    "mobilenetv3small": _application(applications.MobileNetV3Small, include_preprocessing=False),
    "mobilenetv3large": _application(applications.MobileNetV3Large, include_preprocessing=False),
    "inceptionv3": _application(applications.InceptionV3),
    "inceptionresnetv2": _application(applications.InceptionResNetV2),
    "smallcnn": build_small_cnn,
}

# The input scaling each backbone's ImageNet weights were trained with (a classifiers.preprocessing
# mode). EfficientNetB0 rescales [0, 255] inside itself, so build_model puts x255 in front of it and
# feeds it "unit" [0, 1] input: the service never needs a raw-pixel mode.
DEFAULT_PREPROCESSING: dict[str, str] = {
    "densenet169": "torch",
    "densenet121": "torch",
    "resnet50": "caffe",
    "vgg19": "caffe",
    "efficientnetb0": "unit",
    "mobilenet": "tf",
    "mobilenetv3small": "tf",
    "mobilenetv3large": "tf",
    "inceptionv3": "tf",
    "inceptionresnetv2": "tf",
    "smallcnn": "tf",
}

# Global pooling of the head: average as in the MURA paper; max for the small demo CNN, whose findings
# (a screw, a lesion) are small and local, so one strong response should decide.
HEAD_POOLING: dict[str, type[keras.layers.Layer]] = {
    "avg": keras.layers.GlobalAveragePooling2D,
    "max": keras.layers.GlobalMaxPooling2D,
}
DEFAULT_HEAD_POOLING = {"smallcnn": "max"}

FREEZE_MODES = ("none", "all", "top10", "from:N")


def build_backbone(name: str, input_shape: InputShape) -> keras.Model:
    """Build the named headless backbone with random weights.

    Raises:
        ValueError: the name is not a key of BACKBONES.
    """
    builder = BACKBONES.get(name.lower())
    if builder is None:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    return builder(input_shape)


def build_model(
    backbone_name: str,
    input_size: tuple[int, int],
    num_outputs: int,
    weights_path: str | None = None,
    freeze: str = "none",
    dropout: float = 0.2,
    pooling: str | None = None,
) -> keras.Model:
    """Build backbone + head: a num_outputs-way softmax, or one sigmoid unit when num_outputs is 1.

    Args:
        backbone_name: a key of BACKBONES.
        input_size: (height, width) of the input images.
        num_outputs: 7 for the router, 1 for an expert.
        weights_path: a local `*_notop.h5` (ImageNet or RadImageNet style) or None for random weights.
        freeze: one of FREEZE_MODES, see set_freeze_mode.
        dropout: dropout rate before the output layer.
        pooling: a key of HEAD_POOLING; None takes DEFAULT_HEAD_POOLING's choice, else "avg".
    """
    input_shape = (int(input_size[0]), int(input_size[1]), 3)
    backbone = build_backbone(backbone_name, input_shape)
    if weights_path:
        load_notop_weights(backbone, weights_path)
    set_freeze_mode(backbone, freeze)
    inputs = keras.Input(shape=input_shape, name="image")
    features = inputs
    if backbone_name.lower() == "efficientnetb0":
        features = keras.layers.Rescaling(255.0, name="unit_to_pixels")(features)
    features = backbone(features)
    pooling_name = pooling or DEFAULT_HEAD_POOLING.get(backbone_name.lower(), "avg")
    if pooling_name not in HEAD_POOLING:
        raise ValueError(f"Unknown head pooling {pooling_name!r}; choose one of: {', '.join(HEAD_POOLING)}.")
    features = HEAD_POOLING[pooling_name](name=f"{pooling_name}_pool")(features)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    activation = "sigmoid" if num_outputs == 1 else "softmax"
    outputs = keras.layers.Dense(num_outputs, activation=activation, name="predictions")(features)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_{num_outputs}way")


def set_freeze_mode(backbone: keras.Model, freeze: str) -> None:
    """Set trainable flags on the backbone's layers; the head always trains.

    Modes (RadImageNet's comparison plus fine-tuning from a layer):
        none: every layer trains ("unfreeze all").
        all: no backbone layer trains ("freeze all"), only the head.
        top10: the last 10 layers of the backbone train, the rest are frozen ("unfreeze top 10").
        from:N: layers N and later (0-based, in backbone.layers order) train, earlier ones are frozen.

    Raises:
        ValueError: an unknown mode or a bad N.
    """
    layers = backbone.layers
    first_trainable = _first_trainable_layer(freeze, len(layers))
    backbone.trainable = True
    for index, layer in enumerate(layers):
        layer.trainable = index >= first_trainable


def _first_trainable_layer(freeze: str, num_layers: int) -> int:
    """Return the index of the first trainable backbone layer for a freeze mode."""
    mode = freeze.strip().lower()
    if mode == "none":
        return 0
    if mode == "all":
        return num_layers
    if mode == "top10":
        return max(num_layers - 10, 0)
    if mode.startswith("from:"):
        text = mode.removeprefix("from:")
        if text.isdigit() and int(text) <= num_layers:
            return int(text)
        raise ValueError(
            f"Freeze mode {freeze!r}: N must be a whole number from 0 to {num_layers} "
            "(the backbone's layer count), e.g. from:100."
        )
    raise ValueError(f"Unknown freeze mode {freeze!r}; choose one of: {', '.join(FREEZE_MODES)}.")
