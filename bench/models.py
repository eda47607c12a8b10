"""Benchmark model repositories (random weights, nothing downloaded) and FLOP counts from the graph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from classifiers.body_parts import BODY_PARTS
from classifiers.repository.entries import INT8_FILE_KEY, Manifest
from classifiers.repository.manifest import make_model_entry, read_manifest, write_manifest

PREPROCESSING = "torch"


def _application(name: str) -> Callable[[tuple[int, int], int, str], Any]:
    """A keras.applications builder with random weights and a fresh classification head."""

    def build(input_size: tuple[int, int], units: int, activation: str) -> Any:
        import keras

        constructor = getattr(keras.applications, name)
        return constructor(weights=None, input_shape=(*input_size, 3), classes=units,
                           classifier_activation=activation)

    return build


def _build_tiny(input_size: tuple[int, int], units: int, activation: str) -> Any:
    """A two-convolution CNN of a few KB, for smoke runs."""
    import keras

    inputs = keras.Input(shape=(*input_size, 3))
    features = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    features = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(features)
    features = keras.layers.GlobalAveragePooling2D()(features)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(features))


BACKBONES: dict[str, Callable[[tuple[int, int], int, str], Any]] = {
    "densenet169": _application("DenseNet169"),
    "mobilenetv3small": _application("MobileNetV3Small"),
    "efficientnetb0": _application("EfficientNetB0"),
    "tiny": _build_tiny,
}


def build_backbone(name: str, input_size: tuple[int, int], units: int, activation: str) -> Any:
    """Build backbone `name` with random weights; ValueError lists the valid names."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    return BACKBONES[name](input_size, units, activation)


def _save(model: Any, folder: Path, stem: str) -> dict[str, str]:
    """Save as the project's .json architecture + .weights.h5; return the manifest `files` mapping."""
    (folder / f"{stem}.json").write_text(model.to_json())
    model.save_weights(str(folder / f"{stem}.weights.h5"))
    return {"architecture": f"{stem}.json", "weights": f"{stem}.weights.h5"}


def build_repository(cache_root: Path, router_backbone: str, expert_backbone: str,
                     input_size: tuple[int, int]) -> Path:
    """Write (once, then reuse) a router + seven experts repository under `cache_root`; return its folder."""
    folder = cache_root / f"{router_backbone}-router_{expert_backbone}-experts_{input_size[0]}x{input_size[1]}"
    if (folder / "manifest.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    provenance = {"data": "random-weights-benchmark"}
    router = build_backbone(router_backbone, input_size, len(BODY_PARTS), "softmax")
    router_entry = make_model_entry(folder, "router", _save(router, folder, "router"), BODY_PARTS, input_size,
                                    PREPROCESSING, provenance={**provenance, "backbone": router_backbone})
    # One random expert saved seven times: the weights do not change the cost, and building is slow.
    expert = build_backbone(expert_backbone, input_size, 1, "sigmoid")
    experts = {body_part: make_model_entry(
        folder, body_part, _save(expert, folder, body_part), ["abnormal"], input_size, PREPROCESSING, threshold=0.5,
        provenance={**provenance, "backbone": expert_backbone}) for body_part in BODY_PARTS}
    write_manifest(folder, Manifest(router=router_entry, experts=experts))
    return folder


def prepare_repository(folder: Path, log: Callable[[str], None] = print) -> None:
    """Optimize a benchmark repository once (fp32 ONNX + INT8, guard waived: random weights have no accuracy)."""
    from bench.workload import make_view_bytes
    from training.optimize import optimize_repository

    if INT8_FILE_KEY in read_manifest(folder).router.files:
        return
    calibration = folder / "calibration"
    for seed in range(16):
        study = calibration / f"study{seed:02d}"
        study.mkdir(parents=True, exist_ok=True)
        (study / "image1.png").write_bytes(make_view_bytes(seed))
    log("optimizing the benchmark repository: fp32 ONNX + INT8 (once; kept in the cache)")
    optimize_repository(folder, int8=True, calibration=calibration, accuracy_guard=False, calibration_views=16,
                        log=log)


def count_flops(model: Any) -> float:
    """FLOPs of one forward pass on one image: 2 x the multiply-adds of every Conv and Dense layer."""
    total = 0.0
    for layer in _all_layers(model):
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        output_shape = layer.output.shape
        kernel_shape = layer.kernel.shape
        if kind == "Dense":
            total += 2.0 * kernel_shape[0] * kernel_shape[1]
        elif kind == "Conv2D":
            # kernel (kh, kw, in / groups, out); output (1, oh, ow, out).
            total += 2.0 * output_shape[1] * output_shape[2] * output_shape[3] * kernel_shape[0] * kernel_shape[1] \
                * kernel_shape[2]
        else:
            total += 2.0 * output_shape[1] * output_shape[2] * output_shape[3] * kernel_shape[0] * kernel_shape[1]
    return total


def _all_layers(model: Any) -> list[Any]:
    """Every layer, descending into nested models (EfficientNet and MobileNetV3 nest none; be safe)."""
    layers = []
    for layer in model.layers:
        layers.extend(_all_layers(layer) if hasattr(layer, "layers") else [layer])
    return layers
