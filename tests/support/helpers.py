"""Helpers shared by the tests: image makers, request bodies, OpenAPI checks (fixtures are in conftest.py)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from jsonschema import Draft4Validator
from PIL import Image

from bench.launch import encode_multipart, free_port, http_status

__all__ = ["encode_image", "encode_multipart", "free_port", "http_status", "make_radiograph", "multipart",
           "response_schema_name", "validate_against_spec"]


def encode_image(pixels: np.ndarray, image_format: str = "PNG", mode: str | None = None) -> bytes:
    """Encode a numpy array as image bytes in memory."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=image_format)
    return buffer.getvalue()


def make_radiograph(width: int = 96, height: int = 128, seed: int = 0, image_format: str = "PNG") -> bytes:
    """A synthetic grayscale 'radiograph' (dark field, bright bone-like bar, noise) encoded in memory."""
    generator = np.random.default_rng(seed)
    pixels = generator.normal(30, 8, size=(height, width)).clip(0, 255)
    pixels[height // 6: height * 5 // 6, width * 2 // 5: width * 3 // 5] += 150
    return encode_image(pixels.clip(0, 255).astype(np.uint8), image_format, mode="L")


def multipart(*named_images: tuple[str, bytes], **fields: str) -> dict:
    """A Flask test-client form with one 'image' part per (name, bytes), plus form fields."""
    return {"image": [(io.BytesIO(data), name) for name, data in named_images], **fields}


def validate_against_spec(spec: dict[str, Any], schema_name: str, body: Any) -> None:
    """Raise jsonschema.ValidationError when `body` does not match components/schemas/<schema_name>."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    Draft4Validator(schema).validate(body)


def response_schema_name(spec: dict[str, Any], path: str, method: str, status: int) -> str:
    """The component schema name the spec documents for this path, method and status (or default)."""
    responses = spec["paths"][path][method.lower()]["responses"]
    response = responses.get(str(status), responses["default"])
    return response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
