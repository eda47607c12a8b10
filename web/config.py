"""Service configuration: defaults, environment variables and their parsing (no TensorFlow here)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

# gunicorn threads per worker (gunicorn.conf.py, TRIAGE_THREADS): enough that requests reach the app to be judged
# and shed quickly; predictions are capped at 4 fewer, so probes always find a thread. Measured under 4x overload on
# eight DenseNet169s (docs/PERFORMANCE.md, docs/benchmarks/HISTORY.md): 16 kept accepted p99 within the deadline
# plus one batch; 32 did not.
GUNICORN_THREADS = 16


def in_flight_cap(threads: int) -> int:
    """Predictions at once per worker for `threads` gunicorn threads: 4 fewer (half as many under 8), at least 1."""
    return max(1, threads - min(4, threads // 2))


# Defaults for create_app(); every key can be overridden by an environment variable (below) and then
# by the mapping passed to create_app(), in that order.
DEFAULTS: dict[str, Any] = {
    "MODELS_DIR": "h5",
    "MAX_CONTENT_LENGTH": 64 * 1024 * 1024,  # whole request, bytes
    # Uploads stay in memory whatever the part kind, so MAX_CONTENT_LENGTH bounds text fields too; a 413
    # within that many bytes can then only be the number of multipart parts (Flask's MAX_FORM_PARTS).
    "MAX_FORM_MEMORY_SIZE": None,
    "MAX_VIEWS": 12,  # images per study
    "MAX_PIXELS": 40_000_000,  # per image, checked before decoding
    "MIN_SIDE": 32,  # shorter side of an image, pixels
    "MAX_BATCH_SIZE": 16,
    "MAX_WAIT_MS": 2.0,
    "MAX_QUEUE_VIEWS": 256,
    # Load shedding (docs/API.md, "Load shedding"): a study that cannot start within this many ms gets
    # 503 + Retry-After; clients may ask for less with X-Deadline-Ms.
    "QUEUE_TIMEOUT_MS": 2000.0,
    "MAX_IN_FLIGHT": in_flight_cap(GUNICORN_THREADS),  # predictions at once per worker, under its threads
    # Fair shares (web/fairness.py): a client seen this recently keeps its share of MAX_IN_FLIGHT; fronts
    # (addresses) whose X-Forwarded-For names the client, when shares go by address (no API keys).
    "FAIR_SHARE_RECENT_S": 5.0,
    "TRUSTED_PROXIES": "",
    # Loaded in the background (gunicorn), the model threads run this much nicer than the request threads
    # (0: as nice; docs/PERFORMANCE.md, "Refusals on the TensorFlow backend": 10 made refusals faster but cut
    # the accepted throughput under overload by a third or more, so it is the operator's choice).
    "MODEL_NICE": 0,
    "MEMORY_RELEASE": True,  # malloc_trim once idle after a large request; few malloc arenas (web/memory.py)
    "MAX_STUDY_PIXELS": 120_000_000,  # all views of one study together, from their headers
    "PIXEL_BUDGET": 160_000_000,  # decoded pixels in flight per worker
    "WARMUP": True,
    "LOAD_IN_BACKGROUND": False,
    "JIT_COMPILE": False,  # XLA; batches padded to a power of two, one compile per size at warm-up
    "INTRA_OP_THREADS": 0,  # the backend's thread pools; 0 lets it choose
    "INTER_OP_THREADS": 0,
    "BACKEND": None,  # a name in classifiers.backends.registry.BACKEND_CHOICES; None: its DEFAULT_BACKEND
    "REJECT_OUT_OF_DISTRIBUTION": False,  # 422 not_a_radiograph for a view the gate flags, instead of a warning
    "PRELOAD_EXPLAINERS": False,  # heatmaps (explain=true) ready at start instead of on first request per expert
    "RETRY_AFTER_NOT_READY_S": 5,
    # Access (web/access.py): `id:key` entries; none set means every endpoint is open (loopback use only).
    "API_KEYS": "",
    "API_KEY_FILE": "",
    "AUDIT_LOG": "-",  # one JSON line per prediction: "-" stderr, a file path, or "" for none
    "AUDIT_SECRET": "",  # key of the audit line's study_uid_hash; "" draws a random one per process
    # Drift (docs/MONITORING.md): the last this many studies per body part are compared with the repository's
    # reference; no PSI is reported before a part's window holds DRIFT_MIN_STUDIES (classifiers/drift_monitor.py).
    "DRIFT_WINDOW": 200,
    "DRIFT_MIN_STUDIES": 100,
}


def parse_bool(text: str) -> bool:
    """Read a boolean written as 1/0, true/false, yes/no or on/off."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


# Environment variable -> (config key, parser).
ENVIRONMENT_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "TRIAGE_MODELS": ("MODELS_DIR", str),
    "TRIAGE_MAX_REQUEST_BYTES": ("MAX_CONTENT_LENGTH", int),
    "TRIAGE_MAX_VIEWS": ("MAX_VIEWS", int),
    "TRIAGE_MAX_PIXELS": ("MAX_PIXELS", int),
    "TRIAGE_MIN_SIDE": ("MIN_SIDE", int),
    "TRIAGE_MAX_BATCH_SIZE": ("MAX_BATCH_SIZE", int),
    "TRIAGE_MAX_WAIT_MS": ("MAX_WAIT_MS", float),
    "TRIAGE_MAX_QUEUE_VIEWS": ("MAX_QUEUE_VIEWS", int),
    "TRIAGE_QUEUE_TIMEOUT_MS": ("QUEUE_TIMEOUT_MS", float),
    "TRIAGE_MAX_IN_FLIGHT": ("MAX_IN_FLIGHT", int),
    "TRIAGE_FAIR_SHARE_RECENT_S": ("FAIR_SHARE_RECENT_S", float),
    "TRIAGE_TRUSTED_PROXIES": ("TRUSTED_PROXIES", str),
    "TRIAGE_MEMORY_RELEASE": ("MEMORY_RELEASE", parse_bool),
    "TRIAGE_MODEL_NICE": ("MODEL_NICE", int),
    "TRIAGE_MAX_STUDY_PIXELS": ("MAX_STUDY_PIXELS", int),
    "TRIAGE_PIXEL_BUDGET": ("PIXEL_BUDGET", int),
    "TRIAGE_WARMUP": ("WARMUP", parse_bool),
    "TRIAGE_LOAD_IN_BACKGROUND": ("LOAD_IN_BACKGROUND", parse_bool),
    "TRIAGE_JIT_COMPILE": ("JIT_COMPILE", parse_bool),
    "TRIAGE_INTRA_OP_THREADS": ("INTRA_OP_THREADS", int),
    "TRIAGE_INTER_OP_THREADS": ("INTER_OP_THREADS", int),
    "TRIAGE_BACKEND": ("BACKEND", str),
    "TRIAGE_PRELOAD_EXPLAINERS": ("PRELOAD_EXPLAINERS", parse_bool),
    "TRIAGE_REJECT_OUT_OF_DISTRIBUTION": ("REJECT_OUT_OF_DISTRIBUTION", parse_bool),
    "TRIAGE_API_KEYS": ("API_KEYS", str),
    "TRIAGE_API_KEY_FILE": ("API_KEY_FILE", str),
    "TRIAGE_AUDIT_LOG": ("AUDIT_LOG", str),
    "TRIAGE_AUDIT_SECRET": ("AUDIT_SECRET", str),
    "TRIAGE_DRIFT_WINDOW": ("DRIFT_WINDOW", int),
    "TRIAGE_DRIFT_MIN_STUDIES": ("DRIFT_MIN_STUDIES", int),
}


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the config keys set by TRIAGE_* environment variables; a bad value names the variable."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for variable, (key, parse) in ENVIRONMENT_VARIABLES.items():
        if variable not in environ:
            continue
        try:
            config[key] = parse(environ[variable])
        except ValueError as error:
            raise ValueError(
                f"environment variable {variable}={environ[variable]!r} is not valid "
                f"({parse.__name__} expected): {error}"
            ) from None
    return config


def check_limits(config: Mapping[str, Any]) -> None:
    """Raise ValueError naming the key when a limit is not a positive number."""
    for key in ("MAX_CONTENT_LENGTH", "MAX_VIEWS", "MAX_PIXELS", "MIN_SIDE", "MAX_BATCH_SIZE",
                "MAX_QUEUE_VIEWS", "MAX_IN_FLIGHT", "MAX_STUDY_PIXELS", "PIXEL_BUDGET", "DRIFT_WINDOW",
                "DRIFT_MIN_STUDIES"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"config {key}={value!r} must be a positive integer")
    if config["DRIFT_MIN_STUDIES"] > config["DRIFT_WINDOW"]:
        raise ValueError(f"config DRIFT_MIN_STUDIES={config['DRIFT_MIN_STUDIES']!r} must not exceed"
                         f" DRIFT_WINDOW={config['DRIFT_WINDOW']!r} (the window could never hold that many)")
    if not isinstance(config["MODEL_NICE"], int) or not 0 <= config["MODEL_NICE"] <= 19:
        raise ValueError(f"config MODEL_NICE={config['MODEL_NICE']!r} must be an integer from 0 to 19")
    for key in ("INTRA_OP_THREADS", "INTER_OP_THREADS"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"config {key}={value!r} must be an integer >= 0 (0: TensorFlow's default)")
    from classifiers.backends.registry import (
        BACKEND_CHOICES,  # here, not at import: importing the app loads no classifiers
    )

    if config["BACKEND"] is not None and config["BACKEND"] not in BACKEND_CHOICES:
        raise ValueError(f"config BACKEND={config['BACKEND']!r} must be one of {', '.join(BACKEND_CHOICES)}")
    if not config["QUEUE_TIMEOUT_MS"] > 0:
        raise ValueError(f"config QUEUE_TIMEOUT_MS={config['QUEUE_TIMEOUT_MS']!r} must be > 0")
    if not 0 <= config["FAIR_SHARE_RECENT_S"] < float("inf"):
        raise ValueError(f"config FAIR_SHARE_RECENT_S={config['FAIR_SHARE_RECENT_S']!r} must be seconds >= 0")
    if config["MAX_WAIT_MS"] < 0:
        raise ValueError(f"config MAX_WAIT_MS={config['MAX_WAIT_MS']!r} must be >= 0")
