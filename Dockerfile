# Radiograph triage service. CPU build by default:
#   docker build -t triage .
# GPU build (needs the NVIDIA container toolkit at run time: docker run --gpus all ...):
#   docker build --build-arg TENSORFLOW="tensorflow[and-cuda]==2.21.*" -t triage:gpu .
# (the same distribution as requirements.txt's tensorflow, plus the CUDA libraries from PyPI)
# Replace the demo models with your own repository:
#   docker run -p 8000:8000 -v /path/to/models:/app/h5:ro triage
FROM python:3.11-slim

ARG TENSORFLOW="tensorflow==2.21.*"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TRIAGE_BIND=0.0.0.0:8000 \
    TRIAGE_MODELS=/app/h5

WORKDIR /app

COPY requirements.txt .
# The TensorFlow named by the ARG first, then the rest (requirements.txt's tensorflow is then satisfied).
RUN pip install "${TENSORFLOW}" && pip install -r requirements.txt

RUN useradd --create-home --uid 10001 triage
COPY --chown=triage:triage app.py gunicorn.conf.py ./
COPY --chown=triage:triage classifiers/ classifiers/
COPY --chown=triage:triage web/ web/
COPY --chown=triage:triage pacs/ pacs/
COPY --chown=triage:triage static/ static/
COPY --chown=triage:triage h5/ h5/
VOLUME ["/app/h5"]

USER triage
EXPOSE 8000

# Liveness only (200 while serving); orchestrators should gate traffic on /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TRIAGE_BIND', ':8000').rsplit(':', 1)[1] + '/healthz', timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
