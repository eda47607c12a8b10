"""API keys: which endpoints need `Authorization: Bearer <key>`, and the constant-time check.

Keys come from TRIAGE_API_KEYS (`id:key` entries separated by commas) or TRIAGE_API_KEY_FILE (one
`id:key` per line, `#` comments). The id names the caller in the audit log; the key is never logged.
Without any key every endpoint is open, which is meant for `make run` on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, request

from web.errors import ApiError

PROTECTED_ENDPOINTS = frozenset({"triage.predict", "triage.models", "triage.metrics"})
MIN_KEY_LENGTH = 16
ANONYMOUS = "-"


def parse_api_keys(text: str, source: str) -> dict[str, str]:
    """Read `id:key` entries (commas or lines; `#` starts a comment) into {key id: key}.

    A bare key gets the id `key-<first 8 hex digits of its sha256>`.

    Raises:
        ValueError: a key shorter than 16 characters, or an id used twice; names the id, never the key.
    """
    keys: dict[str, str] = {}
    for line in text.splitlines():
        for entry in line.split("#", 1)[0].split(","):
            entry = entry.strip()
            if not entry:
                continue
            key_id, separator, key = entry.partition(":")
            if not separator:
                key_id, key = f"key-{hashlib.sha256(entry.encode()).hexdigest()[:8]}", entry
            key_id, key = key_id.strip(), key.strip()
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(f"{source}: the key of {key_id!r} is shorter than {MIN_KEY_LENGTH} characters; "
                                 "use a long random key (python -c 'import secrets; print(secrets.token_urlsafe())')")
            if key_id in keys:
                raise ValueError(f"{source}: key id {key_id!r} is used twice; give each key its own id")
            keys[key_id] = key
    return keys


def load_api_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """The keys of API_KEYS and API_KEY_FILE together; empty when neither is set."""
    keys = parse_api_keys(config.get("API_KEYS") or "", "TRIAGE_API_KEYS")
    key_file = config.get("API_KEY_FILE")
    if key_file:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"TRIAGE_API_KEY_FILE {key_file}: cannot read it ({error.strerror})") from None
        for key_id, key in parse_api_keys(text, f"TRIAGE_API_KEY_FILE {key_file}").items():
            if key_id in keys:
                raise ValueError(f"key id {key_id!r} is in both TRIAGE_API_KEYS and TRIAGE_API_KEY_FILE")
            keys[key_id] = key
    return keys


def identify_caller(authorization: str | None, keys: Mapping[str, str]) -> str | None:
    """The key id whose key the `Authorization: Bearer` header carries, or None.

    Every key is compared, in constant time, whatever matches: the time taken says nothing about the keys.
    """
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    presented_bytes = presented.strip().encode()
    found = None
    for key_id, key in keys.items():
        if hmac.compare_digest(presented_bytes, key.encode()):
            found = key_id
    return found


def require_api_key() -> None:
    """before_request: 401 for a protected endpoint without a valid key; sets g.key_id."""
    keys: dict[str, str] = current_app.extensions["api_keys"]
    g.key_id = ANONYMOUS
    if not keys or request.endpoint not in PROTECTED_ENDPOINTS:
        return
    key_id = identify_caller(request.headers.get("Authorization"), keys)
    if key_id is None:
        sent = "a wrong key" if "Authorization" in request.headers else "no key"
        raise ApiError(401, "unauthorized", f"this endpoint needs an API key and the request has {sent}; "
                                            "send the header 'Authorization: Bearer <key>'")
    g.key_id = key_id


def register_access_control(app: Flask) -> None:
    """Load the keys once and check them before every request."""
    app.extensions["api_keys"] = load_api_keys(app.config)
    app.before_request(require_api_key)
