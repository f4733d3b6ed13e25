# The two commands of the README: `make demo` (the main job, end to end) and `make test`.
# Everything they need is installed here: a virtual environment in .venv with the exact versions
# of requirements-dev.txt (the lock), and Kafka, PostgreSQL and Redis through scripts/services.py
# (downloads, data and logs under .cache/; README "Prerequisites" says where PostgreSQL's are).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements-dev.txt
RUNTIME_LOCK := requirements.txt

.PHONY: venv services services-down tools demo test unit integration lint faults bench \
	clean lock upgrade

venv: $(STAMP)

# The venv is made anew from the lock whenever the lock or pyproject.toml changes: only the
# locked versions (checked against their hashes) are installed, then the package itself.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) scripts/check_python.py
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-lock to the newest versions pyproject.toml's ranges allow: the whole tree with dev tools
# (the venv's), and the runtime tree (the Docker image's) held to the same versions.
lock: venv
	$(VENV)/bin/uv pip compile pyproject.toml --quiet --universal --generate-hashes --upgrade \
		--extra dev -o $(LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml --quiet --universal --generate-hashes \
		-c $(LOCK) -o $(RUNTIME_LOCK)

# Move every dependency forward and prove it: re-lock, reinstall from the new lock, whole suite.
upgrade: lock
	$(MAKE) test

services: venv
	$(PY) scripts/services.py up

services-down:
	@if [ -x $(PY) ]; then $(PY) scripts/services.py down; else python3 scripts/services.py down; fi

# promtool and the Compose Specification's schema for the operations tests (scripts/tools.py).
tools: venv
	$(PY) scripts/tools.py

demo: services
	$(PY) -m consumer demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit -q

integration: services tools
	$(PY) -m pytest tests/integration -q

# The fault-injection suite (tests/faults) runs on a private Kafka, PostgreSQL and Redis that
# it starts, kills and restarts itself; `make test` runs it reduced, `make faults` at full size.
FAULTS_REDUCED_EVENTS ?= 1000
FAULTS_FULL_EVENTS ?= 50000

test: services lint tools
	FAULTS_EVENTS=$(FAULTS_REDUCED_EVENTS) $(PY) -m pytest tests -q

faults: services
	FAULTS_EVENTS=$(FAULTS_FULL_EVENTS) $(PY) -m pytest tests/faults -q

# Stops the services, removes their files (PostgreSQL's too, wherever they live), and the venv.
clean:
	@if [ -x $(PY) ]; then $(PY) scripts/services.py clean; else python3 scripts/services.py clean; fi
	rm -rf .cache $(VENV)

# The worker against the limit and per-event baselines, measured in one run (see
# docs/performance.md); BENCH_ARGS passes options, e.g. BENCH_ARGS="--processes 2 --events 20000".
bench: services
	$(PY) -m consumer bench $(BENCH_ARGS)
