"""The model repository, loaded for the Orthanc worker and the DICOM node: one error that says what to fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from classifiers.pipeline import Pipeline


class ModelsUnusable(Exception):
    """The model repository cannot be loaded; the message names it and what is wrong."""


def load_pipeline(models: Path) -> Pipeline:
    """Load the service's pipeline (TensorFlow is imported here, after the cheap checks).

    Raises:
        ModelsUnusable: the repository is missing or broken (the message says what to fix).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from classifiers import ModelRepositoryError, Pipeline

    try:
        return Pipeline.load(models)
    except ModelRepositoryError as error:
        raise ModelsUnusable(f"cannot load the models in {models}: {error}") from None
