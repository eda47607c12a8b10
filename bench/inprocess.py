"""In-process measurements: compiled forward passes, the naive Model.predict way, the pipeline."""

from __future__ import annotations

import functools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.workload import latency_summary, run_concurrently
from classifiers import Pipeline, PipelineSettings, ViewInput
from classifiers.backends.base import ImageModel
from classifiers.decoding.imaging import decode_image, resize_image
from classifiers.preprocessing import preprocess_batch


class BatchRecorder:
    """Counts the batch sizes the batchers form (PipelineSettings.on_batch)."""

    def __init__(self) -> None:
        self.sizes: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, model_name: str, batch_size: int, seconds: float) -> None:
        """Record one batch."""
        with self._lock:
            self.sizes[batch_size] += 1

    def take(self) -> dict[str, int]:
        """Return the histogram so far ({batch size: count}) and start a new one."""
        with self._lock:
            histogram = {str(size): count for size, count in sorted(self.sizes.items())}
            self.sizes.clear()
        return histogram


def load_pipeline(repository: Any, settings: PipelineSettings) -> tuple[Pipeline, float]:
    """Load and warm up all eight models; return the pipeline and the seconds it took."""
    started = time.perf_counter()
    pipeline = Pipeline.load(repository, settings)
    return pipeline, time.perf_counter() - started


def time_forward(forward: Any, batch: np.ndarray, repeats: int) -> float:
    """Median seconds of forward(batch) after one untimed call."""
    forward(batch)
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        forward(batch)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def measure_forward(pipeline: Pipeline, batch_sizes: tuple[int, ...], repeats: int) -> dict[str, dict[str, float]]:
    """Compiled forward time (ms per call) of the router and one expert at each batch size."""
    results: dict[str, dict[str, float]] = {}
    for role in ("router", pipeline.body_parts[0]):
        compiled = pipeline.models[role].runner
        results[role] = {}
        for batch_size in batch_sizes:
            results[role][str(batch_size)] = 1000 * time_forward(compiled.forward, zero_batch(compiled, batch_size),
                                                                 repeats)
    return results


def zero_batch(model: ImageModel, batch_size: int) -> np.ndarray:
    """A preprocessed batch of black views at the model's input size (forward passes do not depend on values)."""
    return model.prepare(np.zeros((batch_size, *model.input_size, 3), np.uint8))


def batch_one_forwards(pipeline: Pipeline) -> dict[str, Callable[[], Any]]:
    """The router's and the first expert's forward at batch 1 on a black view; they outlive `pipeline.close()`."""
    runners = {"router": pipeline.models["router"].runner, "expert": pipeline.models[pipeline.body_parts[0]].runner}
    return {role: functools.partial(runner.forward, zero_batch(runner, 1)) for role, runner in runners.items()}


def compare_xla(model: Any, input_size: tuple[int, int], batch_sizes: tuple[int, ...],
                repeats: int) -> dict[str, dict[str, float]]:
    """ms per view of tf.function vs tf.function(jit_compile=True) on one model, plus XLA compile seconds."""
    import tensorflow as tf

    results: dict[str, dict[str, float]] = {}
    for label, jit in (("tf.function", False), ("xla", True)):
        function = tf.function(lambda images: model(images, training=False), jit_compile=jit)
        results[label] = {}
        for batch_size in batch_sizes:
            batch = np.random.default_rng(0).random((batch_size, *input_size, 3), dtype=np.float32)
            started = time.perf_counter()
            function(batch).numpy()
            results[label][f"first_call_s@{batch_size}"] = time.perf_counter() - started
            seconds = time_forward(lambda images, f=function: f(images).numpy(), batch, repeats)
            results[label][f"ms_per_view@{batch_size}"] = 1000 * seconds / batch_size
    return results


def keras_models_of(pipeline: Pipeline) -> dict[str, Any]:
    """The Keras model of each role: the pipeline's own, or loaded from the files when it runs ONNX."""
    from classifiers.backends.keras_files import load_model
    from classifiers.backends.tensorflow_backend import CompiledModel

    # Models on a shared architecture (classifiers.backends.shared_graph) have no Keras model of their own.
    return {role: loaded.runner.model if isinstance(loaded.runner, CompiledModel)
            else load_model(pipeline.repository, loaded.entry)[0] for role, loaded in pipeline.models.items()}


def measure_onnx_precisions(pipeline: Pipeline, batch_sizes: tuple[int, ...],
                            repeats: int) -> dict[str, dict[str, float]] | None:
    """Router forward ms per call, fp32 ONNX vs INT8 ONNX, at each batch size (None without both files)."""
    from classifiers.backends.registry import BACKENDS

    entry = pipeline.models["router"].entry
    if not all(BACKENDS[name].file_key in entry.files for name in ("onnx", "int8")):
        return None
    results: dict[str, dict[str, float]] = {}
    for name in ("onnx", "int8"):
        model, _ = BACKENDS[name].load(pipeline.repository, entry, pipeline.settings.backend_options)
        results[name] = {}
        for batch_size in batch_sizes:
            results[name][str(batch_size)] = 1000 * time_forward(model.forward, zero_batch(model, batch_size), repeats)
    return results


def measure_naive(pipeline: Pipeline, keras_models: dict[str, Any], views: list[bytes], count: int) -> dict[str, Any]:
    """The original project's way: per view, decode, Model.predict on the router, then on its expert."""
    router = pipeline.models["router"]

    def predict_one(data: bytes) -> None:
        image = decode_image(data)
        pixels = resize_image(image, router.input_size)[None]
        scores = keras_models["router"].predict(preprocess_batch(pixels, router.runner.preprocessing), verbose=0)
        part = pipeline.body_parts[int(np.argmax(scores[0]))]
        expert = pipeline.models[part]
        expert_pixels = resize_image(image, expert.input_size)[None]
        keras_models[part].predict(preprocess_batch(expert_pixels, expert.runner.preprocessing), verbose=0)

    predict_one(views[0])  # Model.predict builds its own function on first use: not counted.
    latencies = []
    started = time.perf_counter()
    for index in range(count):
        view_started = time.perf_counter()
        predict_one(views[index % len(views)])
        latencies.append(time.perf_counter() - view_started)
    wall = time.perf_counter() - started
    return {"views": count, "seconds": wall, "views_per_s": count / wall, **latency_summary(latencies)}


def measure_pipeline(pipeline: Pipeline, views: list[bytes], studies: int, views_per_study: int,
                     clients: int, time_limit_s: float, recorder: BatchRecorder) -> dict[str, Any]:
    """`clients` threads calling predict_study on `views_per_study`-view studies: views/s, latency, batches."""

    def predict(index: int) -> None:
        study = [ViewInput(f"view{number}.png", views[(index * views_per_study + number) % len(views)])
                 for number in range(views_per_study)]
        pipeline.predict_study(study)

    predict(0)
    recorder.take()
    wall, latencies, errors = run_concurrently(predict, studies, clients, time_limit_s)
    done = len(latencies)
    return {"clients": clients, "views_per_study": views_per_study, "studies": done, "errors": len(errors),
            "seconds": wall, "studies_per_s": done / wall, "views_per_s": done * views_per_study / wall,
            "batch_sizes": recorder.take(), **latency_summary(latencies)}


def compare_routers(names: tuple[str, ...], input_size: tuple[int, int], repeats: int) -> dict[str, dict[str, float]]:
    """FLOPs and compiled forward ms per view at batch 1 and 8 of alternative router backbones."""
    import tensorflow as tf

    from bench.models import build_backbone, count_flops

    results: dict[str, dict[str, float]] = {}
    for name in names:
        model = build_backbone(name, input_size, 7, "softmax")
        function = tf.function(lambda images, model=model: model(images, training=False))
        results[name] = {"gflop_per_view": count_flops(model) / 1e9}
        for batch_size in (1, 8):
            batch = np.random.default_rng(0).random((batch_size, *input_size, 3), dtype=np.float32)
            seconds = time_forward(lambda images, f=function: f(images).numpy(), batch, repeats)
            results[name][f"ms_per_view@{batch_size}"] = 1000 * seconds / batch_size
    return results
