"""Keras entries of one architecture share one traced function, each with its own weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifiers import Pipeline, PipelineSettings
from classifiers.backends.keras_files import load_model
from classifiers.backends.shared_graph import SharedGraphModel
from classifiers.backends.tensorflow_backend import CompiledModel
from classifiers.body_parts import BODY_PARTS
from classifiers.repository.entries import sha256_file
from classifiers.repository.manifest import read_manifest
from tests.support.model_factory import build_tiny_expert, build_tiny_router, write_repository

PROBE = np.random.default_rng(11).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def one_architecture_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven experts saved from one model object (one architecture JSON), each with other random weights."""
    expert = build_tiny_expert(seed=1)
    experts = {}
    for index, part in enumerate(BODY_PARTS):
        clone = build_tiny_expert(seed=1)
        clone.set_weights([np.random.default_rng(index).normal(0, 0.3, w.shape).astype(np.float32)
                           for w in expert.get_weights()])
        experts[part] = clone
    folder = tmp_path_factory.mktemp("shared") / "repository"
    write_repository(folder, build_tiny_router(), {part: expert for part in BODY_PARTS})
    for part, clone in experts.items():  # same JSON text for all seven, their own weights
        expert.set_weights(clone.get_weights())
        expert.save_weights(str(folder / f"{part}.weights.h5"))
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for part in BODY_PARTS:
        manifest["experts"][part]["sha256"][f"{part}.weights.h5"] = sha256_file(folder / f"{part}.weights.h5")
    manifest_path.write_text(json.dumps(manifest))
    return folder


def test_experts_of_one_architecture_share_one_function_and_keep_their_weights(
        one_architecture_repository: Path) -> None:
    manifest = read_manifest(one_architecture_repository)
    pipeline = Pipeline.load(one_architecture_repository, PipelineSettings(backend="tensorflow"))
    try:
        experts = [pipeline.models[part].runner for part in BODY_PARTS]
        assert all(isinstance(model, SharedGraphModel) for model in experts)
        assert len({id(model.architecture) for model in experts}) == 1
        assert pipeline.models["router"].runner.architecture is not experts[0].architecture
        outputs = {}
        for part, model in zip(BODY_PARTS, experts, strict=True):
            # The independent reference: the entry's own Keras model, loaded on its own.
            reference, _ = load_model(one_architecture_repository, manifest.experts[part])
            batch = model.prepare(PROBE)
            outputs[part] = model.forward(batch)
            np.testing.assert_allclose(outputs[part], np.asarray(reference(batch)), atol=1e-5, err_msg=part)
        assert not np.allclose(outputs["XR_ELBOW"], outputs["XR_WRIST"])  # really different weights
    finally:
        pipeline.close()


def test_xla_models_keep_their_own_function(one_architecture_repository: Path) -> None:
    pipeline = Pipeline.load(one_architecture_repository,
                             PipelineSettings(backend="tensorflow", jit_compile=True, warmup=False))
    try:
        assert all(isinstance(loaded.runner, CompiledModel) for loaded in pipeline.models.values())
    finally:
        pipeline.close()
