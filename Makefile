# One command to run the service, one to run the tests; both install what they need first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 5000
MODELS ?= h5

.PHONY: install install-dev system-packages run dev serve test lint demo-models bench fuzz clean

install: $(VENV)/.runtime-installed
install-dev: $(VENV)/.dev-installed

$(VENV)/.runtime-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.txt requirements-ray.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt -r requirements-ray.txt
	touch $@

# Debian packages the tests run for real: Chromium for the browser tests (Playwright's own browser
# download is not used), nginx in front of gunicorn replicas, Orthanc with its DICOMweb plugin for the
# PACS worker, dcmtk (storescu, storescp, echoscu) as the DICOM node's peers and dicom3tools (dciodvfy) to
# validate every DICOM object written. Only the missing ones are installed.
DEBIAN_TEST_PACKAGES ?= chromium nginx orthanc orthanc-dicomweb dcmtk dicom3tools
system-packages:
	@missing=$$(for package in $(DEBIAN_TEST_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The front door: the service as production runs it (gunicorn with gunicorn.conf.py) on HOST:PORT.
run: install
	TRIAGE_BIND=$(HOST):$(PORT) TRIAGE_MODELS=$(MODELS) $(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

# Flask's development server, for working on the code: loads the models before it listens.
dev: install
	$(PY) app.py --host $(HOST) --port $(PORT) --models $(MODELS)

serve: install
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

# Two workers (pytest-xdist), a test file per worker so module fixtures (an Orthanc, an INT8 repository) are
# built once; session fixtures are per worker. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install-dev system-packages
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install-dev
	$(VENV)/bin/ruff check .

demo-models: install
	$(PY) -m training.demo --out h5

bench: install-dev
	$(PY) -m bench

# Fuzz the decoders (PNG, JPEG, TIFF, BMP, DICOM bytes), then compressed frames' own headers against their
# dataset, for FUZZ_SECONDS each; a crash leaves crash-* here.
FUZZ_SECONDS ?= 600
fuzz: install-dev
	$(PY) -m fuzz.decoding -max_total_time=$(FUZZ_SECONDS) fuzz/corpus
	$(PY) -m fuzz.codestreams -max_total_time=$(FUZZ_SECONDS) fuzz/corpus-codestreams

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
