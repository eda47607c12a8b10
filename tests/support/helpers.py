"""Helpers shared by the tests: image makers, request bodies, OpenAPI checks (fixtures are in conftest.py)."""

from __future__ import annotations

import io
import socket
from typing import Any

import numpy as np
from jsonschema import Draft4Validator
from PIL import Image

from bench.launch import encode_multipart, free_port, http_status

__all__ = ["encode_image", "encode_multipart", "free_port", "http_status", "make_radiograph", "multipart",
           "open_chunked_upload", "read_answer", "response_schema_name", "send_chunks", "validate_against_spec"]


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
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _nullable_as_json_schema(spec["components"])}
    Draft4Validator(schema).validate(body)


def _nullable_as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it (null among the types, and in an enum)."""
    if isinstance(node, list):
        return [_nullable_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_as_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") and "type" in converted:
        converted["type"] = [converted["type"], "null"]
        if "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
    return converted


def response_schema_name(spec: dict[str, Any], path: str, method: str, status: int) -> str:
    """The component schema name the spec documents for this path, method and status (or default)."""
    responses = spec["paths"][path][method.lower()]["responses"]
    response = responses.get(str(status), responses["default"])
    return response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def open_chunked_upload(url: str, content_type: str = "image/png", path: str = "/predict",
                        source: str | None = None) -> socket.socket:
    """A connection that has sent the head of a chunked POST (no Content-Length) and no body yet."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30,
                                          source_address=(source, 0) if source else None)
    connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n".encode())
    return connection


def send_chunks(connection: socket.socket, data: bytes, chunk_size: int = 65536, last: bool = True) -> None:
    """Send `data` as chunks of `chunk_size` bytes, then (when `last`) the terminating empty chunk."""
    for start in range(0, len(data), chunk_size):
        piece = data[start:start + chunk_size]
        connection.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
    if last:
        connection.sendall(b"0\r\n\r\n")


def read_answer(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP answer with a Content-Length: (status, headers in lower case, body)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {answer[:200]!r}")
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in header_lines}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body
