"""One audit line per prediction: who (key id), when, how many views, what came out, how long.

Never pixels, file names given by the client, or patient attributes. The line is JSON on the
`triage.audit` logger, written to stderr (gunicorn's log) or to the file TRIAGE_AUDIT_LOG names.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sys
import time
from typing import Any

from flask import Flask

from classifiers.results import StudyResult

AUDIT_LOGGER = "triage.audit"


def hash_study_uid(study_instance_uid: str, secret: bytes) -> str:
    """A one-way, keyed hash of a StudyInstanceUID: the same study gives the same hash, the hash gives no UID.

    Keyed (HMAC-SHA256 with TRIAGE_AUDIT_SECRET) because UIDs follow guessable patterns that a plain hash
    would let anyone test.
    """
    return hmac.new(secret, study_instance_uid.encode(), hashlib.sha256).hexdigest()[:32]


def audit_secret(app: Flask) -> bytes:
    """The key of `hash_study_uid`: TRIAGE_AUDIT_SECRET, else a random key drawn once for this app (process).

    Without TRIAGE_AUDIT_SECRET, hashes of one study match within a worker's lifetime only.
    """
    configured = app.config.get("AUDIT_SECRET") or ""
    if configured:
        return configured.encode()
    return app.extensions.setdefault("audit_random_secret", secrets.token_bytes(32))


def audit_record(key_id: str, result: StudyResult, latency_ms: float, study_uid_hash: str | None) -> dict[str, Any]:
    """The fields of one audit line (no names, no pixels, no patient attributes)."""
    return {
        "event": "prediction",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "key_id": key_id,
        "views": result.n_images,
        "body_part": result.body_part,
        "abnormality": round(result.abnormality, 4),
        "label": result.label,
        "latency_ms": round(latency_ms, 1),
        "study_uid_hash": study_uid_hash,
    }


def write_audit_line(app: Flask, key_id: str, result: StudyResult, latency_ms: float,
                     study_uid_hash: str | None = None) -> None:
    """Log one prediction on the audit logger."""
    app.extensions["audit_logger"].info(json.dumps(audit_record(key_id, result, latency_ms, study_uid_hash)))


def build_audit_logger(destination: str) -> logging.Logger:
    """The app's own audit logger: lines to stderr ("-") or appended to a file; "" turns it off."""
    # One logger object per app, outside logging's global registry: apps built side by side (tests)
    # keep their own destinations.
    logger = logging.Logger(AUDIT_LOGGER, logging.INFO)
    if destination:
        handler = logging.StreamHandler(sys.stderr) if destination == "-" else logging.FileHandler(destination)
        handler.setFormatter(logging.Formatter("audit %(message)s"))
        logger.addHandler(handler)
    else:
        logger.disabled = True
    return logger
