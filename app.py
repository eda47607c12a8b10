"""Flask app factory of the radiograph triage service; `python app.py` runs the development server.

Production: `gunicorn -c gunicorn.conf.py app:app`. The module-level `app` is built on first access, in
the gunicorn worker, so importing this module loads neither TensorFlow nor any model.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flask import Flask

from web.config import DEFAULTS, check_limits, read_environment

ROOT = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then TRIAGE_* environment variables, then `config`; load the pipeline."""
    # The web layer imports classifiers (and so TensorFlow): imported here, not at module import.
    from classifiers.drift_monitor import DriftMonitor
    from web.access import register_access_control
    from web.audit import build_audit_logger
    from web.errors import register_error_handler
    from web.loading import PipelineLoader, build_settings
    from web.memory import register_memory_release
    from web.metrics import Metrics, register_request_metrics
    from web.openapi import build_openapi
    from web.requests import InMemoryRequest, detect_disconnects
    from web.routes import blueprint
    from web.shedding import InFlightLimit

    app = Flask(__name__, static_folder=str(ROOT / "static"), static_url_path="/static")
    app.request_class = InMemoryRequest
    app.wsgi_app = detect_disconnects(app.wsgi_app)
    app.config.from_mapping(DEFAULTS)
    app.config.from_mapping(read_environment())
    if config is not None:
        app.config.from_mapping(config)
    check_limits(app.config)
    app.json.sort_keys = False

    models_dir = Path(app.config["MODELS_DIR"])
    if not models_dir.is_absolute():
        models_dir = (Path.cwd() / models_dir).resolve()
    metrics = Metrics()
    drift_monitor = DriftMonitor(app.config["DRIFT_WINDOW"], app.config["DRIFT_MIN_STUDIES"])
    settings = build_settings(app.config, on_batch=metrics.observe_batch, on_study=drift_monitor.observe)
    loader = PipelineLoader(models_dir, settings, app.config["MODEL_NICE"], drift_monitor)
    metrics.watch_queues(loader.queue_depths)
    metrics.watch_drift(drift_monitor.snapshot)
    app.extensions["pipeline_loader"] = loader  # the one holder of the pipeline (web.loading.get_pipeline)
    app.extensions["metrics"] = metrics
    app.extensions["drift_monitor"] = drift_monitor  # the app's one monitor: fed by the pipeline, read by /models
    app.extensions["openapi"] = build_openapi()

    app.extensions["audit_logger"] = build_audit_logger(app.config["AUDIT_LOG"])
    app.extensions["in_flight"] = InFlightLimit(app.config["MAX_IN_FLIGHT"], app.config["FAIR_SHARE_RECENT_S"])

    register_error_handler(app)
    register_request_metrics(app, metrics)
    register_access_control(app)
    register_memory_release(app)
    app.after_request(add_security_headers)
    app.register_blueprint(blueprint)

    if app.config["LOAD_IN_BACKGROUND"]:
        loader.load_in_background()
    else:
        loader.load()
    return app


def add_security_headers(response: Any) -> Any:
    """Forbid content sniffing, framing and any script or style not served by this app."""
    for header, value in SECURITY_HEADERS.items():
        response.headers.setdefault(header, value)
    return response


_production_app: Flask | None = None
_production_lock = threading.Lock()


def __getattr__(name: str) -> Flask:
    """Build `app` for gunicorn on first access (in the worker, after fork), loading in the background."""
    global _production_app
    if name != "app":
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    with _production_lock:
        if _production_app is None:
            from classifiers.logs import configure_logging

            configure_logging(os.environ.get("TRIAGE_LOG_LEVEL", "info"))
            environment = read_environment()
            _production_app = create_app({"LOAD_IN_BACKGROUND": environment.get("LOAD_IN_BACKGROUND", True)})
    return _production_app


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `python app.py` options."""
    parser = argparse.ArgumentParser(description="Run the triage service with Flask's development server.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--models", default=None,
                        help="model repository folder (default: $TRIAGE_MODELS or h5/)")
    parser.add_argument("--log-level", default=os.environ.get("TRIAGE_LOG_LEVEL", "info"),
                        help="info (default), debug (adds the libraries' own output), warning or error")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the models, then serve until interrupted; a repository that fails to load exits 1 with why."""
    arguments = parse_arguments(argv)
    config: dict[str, Any] = {"LOAD_IN_BACKGROUND": False}
    if arguments.models is not None:
        config["MODELS_DIR"] = arguments.models
    from classifiers.errors import ModelRepositoryError
    from classifiers.logs import configure_logging

    try:
        configure_logging(arguments.log_level)
        flask_app = create_app(config)
    except (ModelRepositoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    flask_app.run(host=arguments.host, port=arguments.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
