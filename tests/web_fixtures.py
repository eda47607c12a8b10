"""Fixtures and helpers of the web-layer tests: one served app per session, image bytes, OpenAPI checks."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft4Validator
from PIL import Image

# Limits small enough that tests can cross each of them cheaply.
TEST_LIMITS = {"MAX_VIEWS": 3, "MAX_PIXELS": 500_000, "MIN_SIDE": 32, "MAX_CONTENT_LENGTH": 1_000_000,
               "MAX_STUDY_PIXELS": 1_000_000}


def make_radiograph(width: int = 96, height: int = 128, seed: int = 0, image_format: str = "PNG") -> bytes:
    """A synthetic grayscale 'radiograph' (dark field, bright bone-like bar, noise) encoded in memory."""
    generator = np.random.default_rng(seed)
    pixels = generator.normal(30, 8, size=(height, width)).clip(0, 255)
    pixels[height // 6: height * 5 // 6, width * 2 // 5: width * 3 // 5] += 150
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="L").save(buffer, format=image_format)
    return buffer.getvalue()


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def validate_against_spec(spec: dict[str, Any], schema_name: str, body: Any) -> None:
    """Raise jsonschema.ValidationError when `body` does not match components/schemas/<schema_name>."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    Draft4Validator(schema).validate(body)


def response_schema_name(spec: dict[str, Any], path: str, method: str, status: int) -> str:
    """The component schema name the spec documents for this path, method and status (or default)."""
    responses = spec["paths"][path][method.lower()]["responses"]
    response = responses.get(str(status), responses["default"])
    return response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


@pytest.fixture(scope="session")
def web_app(tiny_repository: Path) -> Flask:
    """The service over the tiny repository, loaded synchronously, with small limits."""
    from app import create_app

    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(tiny_repository), **TEST_LIMITS})
    yield flask_app
    flask_app.extensions["pipeline_loader"].close()


@pytest.fixture
def client(web_app: Flask) -> FlaskClient:
    """A test client of the session's app."""
    return web_app.test_client()


@pytest.fixture(scope="session")
def openapi_spec(web_app: Flask) -> dict[str, Any]:
    """The service's own /openapi.json."""
    return web_app.test_client().get("/openapi.json").get_json()
