"""Heatmaps (classifiers.explain): CAM and Grad-CAM on real tiny Keras models, their peak and overlay."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifiers import ModelRepositoryError, Pipeline, PipelineSettings, ViewInput
from classifiers.body_parts import BODY_PARTS
from classifiers.explain.explainers import CAM, GRAD_CAM, Explainer
from classifiers.explain.overlay import explain_view, overlay_size
from tests.support.helpers import encode_image
from tests.support.model_factory import build_tiny_expert


def _brightness_model(library: str = "keras", pool: str = "max"):
    """Conv 1x1 (weight 1, ReLU) -> 2x2 max pooling -> global pooling -> Dense(1, weight 1): CAM = brightness."""
    import keras as keras3
    import tf_keras

    keras = tf_keras if library == "tf_keras" else keras3
    inputs = keras.Input(shape=(64, 64, 3))
    features = keras.layers.Conv2D(1, 1, activation="relu", name="bright")(inputs)
    features = keras.layers.Conv2D(1, 2, strides=2, activation="relu", name="coarse")(features)
    pooled = {"max": keras.layers.GlobalMaxPooling2D, "avg": keras.layers.GlobalAveragePooling2D}[pool]()(features)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="predictions")(keras.layers.Dropout(0.5)(pooled))
    model = keras.Model(inputs, outputs)
    model.get_layer("bright").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32), np.zeros(1, np.float32)])
    model.get_layer("coarse").set_weights([np.full((2, 2, 1, 1), 0.25, np.float32), np.zeros(1, np.float32)])
    model.get_layer("predictions").set_weights([np.ones((1, 1), np.float32), np.full(1, -0.5, np.float32)])
    return model


def _view_with_spot(width: int, height: int, x: int, y: int) -> Image.Image:
    """A dark RGB view with one bright disc of radius 8 centred on (x, y)."""
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.where((columns - x) ** 2 + (rows - y) ** 2 <= 64, 230, 20).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
@pytest.mark.parametrize(("width", "height", "x", "y"), [(300, 200, 240, 50), (120, 400, 30, 330)])
def test_peak_lands_on_the_bright_spot_in_uploaded_pixels(library: str, width: int, height: int, x: int,
                                                          y: int) -> None:
    explainer = Explainer(_brightness_model(library), (64, 64), "unit", ["abnormal"])
    view = _view_with_spot(width, height, x, y)
    resized = np.asarray(view.resize((64, 64), Image.Resampling.BILINEAR))[None]
    explanation = explain_view(view, [item[0] for item in explainer.maps(resized)], explainer.method)
    assert abs(explanation.peak[0] - x) <= 0.06 * width and abs(explanation.peak[1] - y) <= 0.06 * height
    with Image.open(io.BytesIO(explanation.heatmap_png)) as overlay:
        assert overlay.size == (width, height) and overlay.mode == "RGB"
        # Hot colours at the spot, the view's own grey (barely tinted) far from it.
        red, green, blue = overlay.getpixel((x, y))[:3]
        assert red > blue
        far = (width - 1 - x // 2, height - 1 - y // 2) if x < width // 2 else (5, height - 5)
        assert np.ptp(overlay.getpixel(far)[:3]) <= 3


def test_layer_steps_back_over_final_pooling_and_refines_with_the_finer_map() -> None:
    explainer = Explainer(_brightness_model(), (64, 64), "unit", ["abnormal"])
    # The last 4-D output is "coarse" (32x32); "bright" (64x64) has twice its resolution.
    assert explainer.layers == ["coarse", "bright"] and explainer.method == f"{CAM}*{GRAD_CAM}"
    single = Explainer(_brightness_model(), (64, 64), "unit", ["abnormal"], refine=False)
    assert single.layers == ["coarse"] and single.method == CAM


def test_cam_equals_grad_cam_up_to_a_positive_factor_and_an_independent_computation() -> None:
    import keras

    model = build_tiny_expert((32, 32), seed=3)
    cam = Explainer(model, (32, 32), "unit", ["abnormal"], refine=False)
    grad_cam = Explainer(model, (32, 32), "unit", ["abnormal"], refine=False, allow_cam=False)
    assert (cam.method, grad_cam.method) == (CAM, GRAD_CAM)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cam_maps, grad_maps = cam.maps(images)[0], grad_cam.maps(images)[0]
    feature_layer = model.get_layer(cam.layers[0])
    features = np.asarray(keras.Model(model.inputs, feature_layer.output)(images / 255.0))
    expected = features @ np.asarray(model.layers[-1].get_weights()[0])[:, 0]
    np.testing.assert_allclose(cam_maps, expected, atol=1e-4)
    ratio = grad_maps / np.where(np.abs(cam_maps) > 1e-3, cam_maps, np.nan)
    finite = ratio[np.isfinite(ratio)]
    assert finite.size > 100 and finite.min() > 0 and np.ptp(finite) < 1e-2 * np.median(finite)


def test_two_way_softmax_uses_positive_minus_negative_weights() -> None:
    model = build_tiny_expert((32, 32), two_way=True, seed=4)
    explainer = Explainer(model, (32, 32), "unit", ["negative", "positive"], refine=False)
    grad_cam = Explainer(model, (32, 32), "unit", ["negative", "positive"], refine=False, allow_cam=False)
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    cam_maps, grad_maps = explainer.maps(images)[0], grad_cam.maps(images)[0]
    correlation = np.corrcoef(cam_maps.ravel(), grad_maps.ravel())[0, 1]
    assert correlation > 0.999


def test_a_named_layer_is_used_and_an_unknown_one_lists_the_choices() -> None:
    explainer = Explainer(_brightness_model(), (64, 64), "unit", ["abnormal"], layer_names=["bright"])
    assert explainer.layers == ["bright"] and explainer.method == GRAD_CAM  # conv then pooling: not plain CAM
    with pytest.raises(ModelRepositoryError, match="'nope', which is not a layer.*bright, coarse"):
        Explainer(_brightness_model(), (64, 64), "unit", ["abnormal"], layer_names=["nope"])


@pytest.mark.parametrize(("size", "expected"), [((2000, 1000), (1024, 512)), ((300, 700), (300, 700)),
                                                ((1024, 1536), (683, 1024))])
def test_overlay_keeps_the_view_size_or_at_most_1024_on_the_long_side(size: tuple, expected: tuple) -> None:
    assert overlay_size(*size) == expected


def _study(views: int = 2) -> list[ViewInput]:
    rng = np.random.default_rng(5)
    return [ViewInput(f"v{index}.png", encode_image(rng.integers(0, 256, (70 + 9 * index, 50), dtype=np.uint8)))
            for index in range(views)]


def test_without_explain_no_explainer_is_built_and_no_field_is_added(tiny_repository: Path) -> None:
    pipeline = Pipeline.load(tiny_repository, PipelineSettings(warmup=False))
    try:
        plain = pipeline.predict_study(_study(), body_part="XR_HAND").to_dict()
        assert pipeline.explainers._explainers == {}
        assert all("explanation" not in view for view in plain["images"]) and "explain" not in plain["timing_ms"]
        explained = pipeline.predict_study(_study(), body_part="XR_HAND", explain=True).to_dict()
        assert set(pipeline.explainers._explainers) == {"XR_HAND"} and "explain" in explained["timing_ms"]
        for view, (height, width) in zip(explained["images"], [(70, 50), (79, 50)], strict=True):
            assert view["explanation"]["method"] in (CAM, GRAD_CAM)
            x, y = view["explanation"]["peak"]
            assert 0 <= x < width and 0 <= y < height
            assert view["explanation"]["heatmap"].startswith("data:image/png;base64,")
            assert view["abnormality"] == next(v for v in plain["images"] if v["name"] == view["name"])["abnormality"]
    finally:
        pipeline.close()


def test_onnx_backend_explains_with_the_keras_model_loaded_on_first_use(onnx_repository: Path) -> None:
    folder = onnx_repository
    results = {}
    for backend in ("tensorflow", "onnx"):
        pipeline = Pipeline.load(folder, PipelineSettings(warmup=False, backend=backend))
        try:
            result = pipeline.predict_study(_study(), body_part=BODY_PARTS[0], explain=True).to_dict()
            results[backend] = [view["explanation"] for view in result["images"]]
            expert = pipeline.models[BODY_PARTS[0]]
            keras_file = expert.entry.version(expert.entry.keras_file)
            assert expert.version == (keras_file if backend == "tensorflow" else expert.entry.version("XR_ELBOW.onnx"))
        finally:
            pipeline.close()
    assert results["onnx"] == results["tensorflow"]
    # Both say which file explained: the Keras file, also where the ONNX export scored.
    assert {view["model"] for view in results["onnx"]} == {keras_file}


def _branching_brightness_model(library: str = "keras"):
    """The brightness model with a residual branch (Add), as DenseNet and ResNet have: not a chain of layers."""
    import keras as keras3
    import tf_keras

    keras = tf_keras if library == "tf_keras" else keras3
    inputs = keras.Input(shape=(64, 64, 3))
    bright = keras.layers.Conv2D(1, 1, activation="relu", name="bright")(inputs)
    branch = keras.layers.Conv2D(1, 1, name="branch")(bright)
    merged = keras.layers.Add(name="merge")([bright, branch])
    features = keras.layers.Conv2D(1, 2, strides=2, activation="relu", name="coarse")(merged)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="predictions")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("bright").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32), np.zeros(1, np.float32)])
    model.get_layer("branch").set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    model.get_layer("coarse").set_weights([np.full((2, 2, 1, 1), 0.25, np.float32), np.zeros(1, np.float32)])
    model.get_layer("predictions").set_weights([np.ones((1, 1), np.float32), np.full(1, -0.5, np.float32)])
    return model


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_a_model_with_branches_is_explained_through_a_sub_model(library: str) -> None:
    model = _branching_brightness_model(library)
    explainer = Explainer(model, (64, 64), "unit", ["abnormal"])
    assert explainer.layers == ["coarse", "merge"] and explainer.method == f"{CAM}*{GRAD_CAM}"
    view = _view_with_spot(200, 160, 150, 40)
    resized = np.asarray(view.resize((64, 64), Image.Resampling.BILINEAR))[None]
    coarse, finer = explainer.maps(resized)
    assert coarse.shape == (1, 32, 32) and finer.shape == (1, 64, 64)
    # CAM at the coarse layer equals the features times the dense weight (1), computed independently.
    features = np.asarray(type(model)(model.inputs, model.get_layer("coarse").output)(resized / 255.0))[..., 0]
    np.testing.assert_allclose(coarse, features, rtol=1e-4, atol=1e-5)
    explanation = explain_view(view, [item[0] for item in (coarse, finer)], explainer.method)
    assert abs(explanation.peak[0] - 150) <= 12 and abs(explanation.peak[1] - 40) <= 10
