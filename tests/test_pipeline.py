"""The two-stage pipeline on models whose outputs are known: routing, aggregation, warnings, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from classifiers import InvalidOption, Pipeline, PipelineSettings, UnreadableImage, ViewInput
from classifiers.body_parts import BODY_PARTS
from tests.support.helpers import encode_image
from tests.support.model_factory import build_linear_model, write_repository

ELBOW, HAND, WRIST = BODY_PARTS.index("XR_ELBOW"), BODY_PARTS.index("XR_HAND"), BODY_PARTS.index("XR_WRIST")
# Router: red votes elbow, green votes hand, blue votes wrist (inputs in [0, 1], "unit" preprocessing).
ROUTER_KERNEL = np.zeros((3, 7), dtype=np.float32)
ROUTER_KERNEL[0, ELBOW], ROUTER_KERNEL[1, HAND], ROUTER_KERNEL[2, WRIST] = 8.0, 8.0, 8.0
ROUTER_BIAS = np.zeros(7, dtype=np.float32)
THRESHOLDS = {part: 0.3 + 0.05 * index for index, part in enumerate(BODY_PARTS)}


def expert_weights(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A different linear expert per body part, so a wrong expert choice changes the score."""
    return np.array([[1.0 + index], [-0.5 * index], [2.0]], dtype=np.float32), np.array([-1.0 + 0.1 * index])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def expected_router(rgb: np.ndarray) -> np.ndarray:
    return softmax(rgb / 255.0 @ ROUTER_KERNEL + ROUTER_BIAS)


def expected_expert(part: str, rgb: np.ndarray) -> np.ndarray:
    kernel, bias = expert_weights(BODY_PARTS.index(part))
    return 1 / (1 + np.exp(-(rgb / 255.0 @ kernel + bias)))[:, 0]


@pytest.fixture(scope="module")
def linear_pipeline(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("linear")
    router = build_linear_model(ROUTER_KERNEL, ROUTER_BIAS, "softmax")
    experts = {part: build_linear_model(*expert_weights(index), "sigmoid") for index, part in enumerate(BODY_PARTS)}
    write_repository(folder, router, experts, preprocessing="unit", thresholds=THRESHOLDS)
    batch_sizes: list[int] = []
    settings = PipelineSettings(max_wait_ms=20, on_batch=lambda _, size, seconds: batch_sizes.append(size))
    pipeline = Pipeline.load(folder, settings)
    pipeline.batch_sizes = batch_sizes
    yield pipeline
    pipeline.close()


def assert_same_result(actual, expected, path: str = "") -> None:
    """Nested equality: floats within 1e-5, everything else exact."""
    if isinstance(expected, dict):
        assert list(actual) == list(expected), path
        for key in expected:
            assert_same_result(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (item, expected_item) in enumerate(zip(actual, expected, strict=True)):
            assert_same_result(item, expected_item, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-5), path
    else:
        assert actual == expected, path


def flat_views(colors: list[tuple[int, int, int]]) -> tuple[list[ViewInput], np.ndarray]:
    """Uniform-colour views (resizing keeps their values exact) and their (N, 3) colours."""
    views = [ViewInput(f"view{index}.png", encode_image(np.full((40, 50, 3), color, dtype=np.uint8)))
             for index, color in enumerate(colors)]
    return views, np.asarray(colors, dtype=np.float64)


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_study_routing_and_aggregation_match_numpy(linear_pipeline: Pipeline, aggregation: str) -> None:
    views, rgb = flat_views([(250, 40, 10), (200, 90, 30), (30, 60, 90)])
    result = linear_pipeline.predict_study(views, aggregation=aggregation)

    router_scores = expected_router(rgb)
    study_part = BODY_PARTS[int(np.argmax(router_scores.mean(axis=0)))]
    view_scores = expected_expert(study_part, rgb)
    study_score = view_scores.mean() if aggregation == "mean" else view_scores.max()
    assert result.body_part == study_part == "XR_ELBOW"
    assert result.body_part_confidence == pytest.approx(router_scores.mean(axis=0)[ELBOW], abs=1e-5)
    assert result.abnormality == pytest.approx(study_score, abs=1e-5)
    assert result.threshold == pytest.approx(THRESHOLDS[study_part])
    assert result.label == ("abnormal" if study_score >= THRESHOLDS[study_part] else "normal")
    assert [view.body_part for view in result.images] == ["XR_ELBOW", "XR_ELBOW", "XR_WRIST"]
    for view, scores, score in zip(result.images, router_scores, view_scores, strict=True):
        assert view.abnormality == pytest.approx(score, abs=1e-5)
        assert list(view.body_part_scores.values()) == pytest.approx(list(scores), abs=1e-5)
    assert any("views disagree" in warning and "view2.png: XR_WRIST" in warning for warning in result.warnings)
    assert result.to_dict()["study"]["n_images"] == 3


def test_given_body_part_picks_the_expert_and_warns_when_the_router_disagrees(linear_pipeline: Pipeline) -> None:
    views, rgb = flat_views([(255, 0, 0)])
    result = linear_pipeline.predict_study(views, body_part="wrist")
    assert result.body_part == "XR_WRIST"
    assert result.abnormality == pytest.approx(expected_expert("XR_WRIST", rgb)[0], abs=1e-5)
    assert any("strongly disagrees with body_part XR_WRIST" in w and "sees XR_ELBOW" in w for w in result.warnings)


def test_given_body_part_that_agrees_gives_no_warning(linear_pipeline: Pipeline) -> None:
    views, _ = flat_views([(0, 255, 0)])
    assert linear_pipeline.predict_study(views, body_part="XR_HAND").warnings == []


def test_low_router_confidence_is_warned(linear_pipeline: Pipeline) -> None:
    views, rgb = flat_views([(60, 60, 60)])  # every class nearly equal
    result = linear_pipeline.predict_study(views)
    assert result.body_part_confidence < 0.6
    assert any("confidence" in warning and "under 0.60" in warning for warning in result.warnings)


@pytest.mark.parametrize(
    ("body_part", "aggregation", "message"),
    [("XR_KNEE", "mean", "unknown body_part 'XR_KNEE'; valid: XR_ELBOW"),
     (None, "median", "unknown aggregation 'median'; valid: mean, max")],
)
def test_invalid_options_are_refused(linear_pipeline: Pipeline, body_part, aggregation, message) -> None:
    views, _ = flat_views([(1, 2, 3)])
    with pytest.raises(InvalidOption, match=message):
        linear_pipeline.predict_study(views, body_part=body_part, aggregation=aggregation)


def test_empty_study_and_bad_view_are_refused(linear_pipeline: Pipeline) -> None:
    with pytest.raises(InvalidOption, match="at least one image"):
        linear_pipeline.predict_study([])
    views, _ = flat_views([(1, 2, 3)])
    with pytest.raises(UnreadableImage, match="notes.txt"):
        linear_pipeline.predict_study([*views, ViewInput("notes.txt", b"hello")])


def test_32_threads_get_exactly_the_serial_results(linear_pipeline: Pipeline) -> None:
    rng = np.random.default_rng(5)
    studies = [flat_views([tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(rng.integers(1, 4))])[0]
               for _ in range(32)]
    serial = [linear_pipeline.predict_study(views).to_dict() for views in studies]
    linear_pipeline.batch_sizes.clear()
    concurrent: list = [None] * len(studies)
    barrier = threading.Barrier(len(studies))

    def call(index: int) -> None:
        barrier.wait()
        concurrent[index] = linear_pipeline.predict_study(studies[index]).to_dict()

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(studies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for serial_result, concurrent_result in zip(serial, concurrent, strict=True):
        serial_result.pop("timing_ms"), concurrent_result.pop("timing_ms")
        # Batch composition changes float rounding in the last digits only: labels and parts are exact.
        assert_same_result(concurrent_result, serial_result)
    assert max(linear_pipeline.batch_sizes) > 3  # views of different callers shared batches


def test_describe_reports_device_versions_and_models(linear_pipeline: Pipeline, tmp_path: Path) -> None:
    described = linear_pipeline.describe()
    assert described["device"].startswith(("CPU", "GPU"))
    assert set(described["models"]) == {"router", *BODY_PARTS}
    assert described["models"]["XR_HAND"]["threshold"] == pytest.approx(THRESHOLDS["XR_HAND"])
    assert described["versions"]["tensorflow"].startswith("2.")
    assert linear_pipeline.queue_depths() == {role: 0 for role in ["router", *BODY_PARTS]}
