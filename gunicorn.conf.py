"""gunicorn settings for the triage service: `gunicorn -c gunicorn.conf.py app:app`.

TensorFlow does not survive fork, so the app (and its models) is built in each worker after the fork:
no preload_app. The app loads its models in a background thread, so /healthz answers at once and
/readyz says 503 until every model is loaded and warmed up. Each worker loads all eight models:
keep workers low (one per GPU) and raise threads; concurrent requests are batched inside the worker.
"""

from __future__ import annotations

import os

from web.config import GUNICORN_THREADS, in_flight_cap

# TRIAGE_BIND: where to listen. Default 127.0.0.1:8000 (loopback only); the Docker image sets 0.0.0.0:8000.
bind = [address.strip() for address in os.environ.get("TRIAGE_BIND", "127.0.0.1:8000").split(",")]
workers = int(os.environ.get("TRIAGE_WORKERS", "1"))
worker_class = "gthread"
# Enough threads that requests reach the app, which judges them (deadline, in-flight cap, pixel budget)
# and sheds what it cannot serve in time with a quick 503, instead of leaving them unseen in the accept
# queue. The app admits at most TRIAGE_MAX_IN_FLIGHT predictions; the threads above that stay free for
# /healthz, /readyz and /metrics.
threads = int(os.environ.get("TRIAGE_THREADS", str(GUNICORN_THREADS)))
os.environ.setdefault("TRIAGE_MAX_IN_FLIGHT", str(in_flight_cap(threads)))
preload_app = False  # TensorFlow does not survive fork: build the app in each worker.

# A cold GPU (CUDA init, first kernels) can take minutes; warm-up happens before /readyz says 200,
# but a worker must not be killed while a slow first batch runs.
timeout = int(os.environ.get("TRIAGE_TIMEOUT", "180"))
graceful_timeout = 30
keepalive = 5
# Heartbeat files on tmpfs: a container's overlay disk can stall them and get workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Access log: client, method, path (no query string), status, bytes sent, milliseconds, user agent.
# Bodies (the images) are never logged.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("TRIAGE_LOG_LEVEL", "info")
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'


def when_ready(server) -> None:
    """Warn loudly, at start, when the service is reachable beyond loopback without API keys."""
    from web.gunicorn_hooks import open_service_warning

    warning = open_service_warning(bind, dict(os.environ))
    if warning:
        for _ in range(3):  # hard to miss in a scrolling log
            server.log.warning(warning)


def post_fork(server, worker) -> None:
    """In each worker: gunicorn's own 400/414/431 answers use the API's JSON error shape; 2 malloc arenas."""
    from web.gunicorn_hooks import install
    from web.memory import limit_malloc_arenas, memory_release_enabled

    install()
    if memory_release_enabled():  # before the worker starts its threads (docs/PERFORMANCE.md, "Memory given back")
        limit_malloc_arenas()
