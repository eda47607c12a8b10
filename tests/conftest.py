"""Shared pytest fixtures: tiny real model repositories, the app and its client, synthetic images."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.support.helpers import encode_image  # noqa: E402
from tests.support.model_factory import write_tiny_repository  # noqa: E402

# Limits small enough that tests can cross each of them cheaply.
TEST_LIMITS = {"MAX_VIEWS": 3, "MAX_PIXELS": 500_000, "MIN_SIDE": 32, "MAX_CONTENT_LENGTH": 1_000_000,
               "MAX_STUDY_PIXELS": 1_000_000}


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of tiny random Keras 3 models (32x32 input), shared by the whole session."""
    return write_tiny_repository(tmp_path_factory.mktemp("tiny_repository"))


@pytest.fixture(scope="session")
def onnx_export(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A copy of `tiny_repository` with every model exported to ONNX, once per run; and each model's difference.

    Tests read it; a test that changes a repository copies it first.
    """
    import shutil

    from training.export_onnx import export_repository

    folder = Path(shutil.copytree(tiny_repository, tmp_path_factory.mktemp("onnx") / "repository"))
    return folder, export_repository(folder, log=lambda line: None)


@pytest.fixture(scope="session")
def onnx_repository(onnx_export: tuple[Path, dict[str, float]]) -> Path:
    """The session's ONNX-exported tiny repository (read only)."""
    return onnx_export[0]


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_repository: Path):
    """A loaded Pipeline over `tiny_repository`, shared by the session."""
    from classifiers import Pipeline

    pipeline = Pipeline.load(tiny_repository)
    yield pipeline
    pipeline.close()


@pytest.fixture
def radiograph_png() -> bytes:
    """A 128x96 grayscale PNG with a bright bar on a dark background."""
    pixels = np.full((128, 96), 20, dtype=np.uint8)
    pixels[20:110, 40:56] = 200
    return encode_image(pixels)


@pytest.fixture(scope="session")
def app(tiny_repository: Path):
    """The service over the tiny repository, loaded synchronously, with small limits (session-wide: load time)."""
    from app import create_app

    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(tiny_repository), **TEST_LIMITS})
    yield flask_app
    flask_app.extensions["pipeline_loader"].close()


@pytest.fixture
def client(app):
    """A test client of the session's app."""
    return app.test_client()


@pytest.fixture(scope="session")
def openapi_spec(app) -> dict:
    """The service's own /openapi.json."""
    return app.test_client().get("/openapi.json").get_json()


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A spy on pydicom's frame decoder (every codec plugin runs under DecodeRunner.decode): the frames it got."""
    from pydicom.pixels.decoders.base import DecodeRunner

    calls: list[int] = []
    original = DecodeRunner.decode

    def counting_decode(self, index: int):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(DecodeRunner, "decode", counting_decode)
    return calls


@pytest.fixture(autouse=True)
def _logging_restored():
    """Put back every logger's level and disabled flag: a CLI's logging set-up run in-process must not hide a
    later test's log lines from caplog."""
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    saved = [(logger, logger.level, logger.disabled, logger.propagate) for logger in loggers]
    yield
    for logger, level, disabled, propagate in saved:
        logger.setLevel(level)
        logger.disabled, logger.propagate = disabled, propagate


def _leftovers() -> list[str]:
    """Batcher threads and child processes still alive (a pipeline or server some fixture did not close)."""
    import psutil

    threads = [thread.name for thread in threading.enumerate() if thread.name.startswith("batcher-")]
    children = [" ".join(child.cmdline()[:3]) for child in psutil.Process().children(recursive=True)
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    return [f"{len(threads)} batcher threads"] * bool(threads) + [f"child process: {name}" for name in children]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say what outlived its test: batcher threads of unclosed pipelines, servers still running."""
    try:
        leftovers = _leftovers()
    except Exception as error:  # psutil missing or a process gone meanwhile: the check is advice only
        leftovers = [f"(not checked: {error})"]
    if leftovers:
        terminalreporter.write_sep("-", "left running after the tests (close them in their fixtures)")
        for line in leftovers:
            terminalreporter.write_line(line)
