# The two commands of the README: `make demo` (the main job, end to end) and `make test`.
# Everything they need is installed here: a virtual environment in .venv, and Kafka, PostgreSQL
# and Redis through scripts/services.py (data, logs and downloads under .cache/).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv services services-down tools demo test unit integration lint faults bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

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

faults: venv
	FAULTS_EVENTS=$(FAULTS_FULL_EVENTS) $(PY) -m pytest tests/faults -q

clean: services-down
	rm -rf .cache $(VENV)

# The worker against the limit and per-event baselines, measured in one run (see README
# "Performance"); BENCH_ARGS passes options, e.g. BENCH_ARGS="--processes 2 --events 20000".
bench: services
	$(PY) -m consumer bench $(BENCH_ARGS)
