# capi-relay -- one target per gate. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY_VERSION := $(shell cat .python-version)
PYTHON_BOOT ?= python3.13
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_CLI_VERSION := 1.170.0
export SAM_CLI_TELEMETRY := 0
export PYTHONDONTWRITEBYTECODE := 1
# sam build needs python3.13 on PATH: put the project venv first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv sam-cli build lint unit integration e2e test demo local-stack bench lock countries clean soak mutation

help:
	@echo "make demo   - run the whole flow locally (moto + Graph stand-in + Lambda RIE), print outcomes"
	@echo "make test   - lint, type-check and run every test (unit, integration, end-to-end)"
	@echo "make bench  - benchmarks that print numbers"
	@echo "make build  - sam build (the Lambda artifact in .aws-sam/build)"
	@echo "make soak   - lifecycle soak under the RIE with faults + one redrive (minutes; SOAK_EVENTS=20000 for full size)"
	@echo "make mutation - mutmut on the decision modules (MODULE=search|throttle|envelope|quarantine|fate for one)"

# requirements-dev.lock pins every test/dev dependency (regenerate: make lock).
$(VENV)/.stamp: pyproject.toml requirements-dev.lock
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --python $(PY) -r requirements-dev.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

venv: $(VENV)/.stamp

$(SAM_VENV)/.stamp:
	$(PYTHON_BOOT) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(SAM_VENV)/bin/uv pip install -q --python $(SAM_VENV)/bin/python 'aws-sam-cli==$(SAM_CLI_VERSION)'
	touch $@

sam-cli: $(SAM_VENV)/.stamp

build: venv sam-cli
	$(SAM) build --template-file template.yaml

lint: venv sam-cli
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(PY) -m pytest tests/unit -q -m sam

# Unit tests need no SAM CLI: the template lint test (marked `sam`) runs in `make lint`.
unit: venv
	$(PY) -m pytest tests/unit -q -n 2 -m "not sam and not soak"

integration: venv
	$(PY) -m pytest tests/integration -q -m "not soak"

e2e: build
	$(PY) -m pytest tests/e2e -q -m "not soak"

test: lint unit integration e2e

demo: build
	$(PY) -m local.demo

# moto on :5000 + Graph stand-in on :8089 in the foreground, for `sam local invoke --env-vars events/env.json`
local-stack: venv
	$(PY) -m local.serve

bench: build
	$(PY) -m bench.run_all

# Lifecycle soak (issue 17, local/soak.py): minutes, outside `make test`. The default size runs in about
# 5 minutes on 2 shared cores; SOAK_EVENTS=20000 is the issue's full size. Holds the RIE lock like the e2e tests.
SOAK_EVENTS ?= 4000
SOAK_SEED ?= 7
soak: build
	flock /tmp/capi-rie.lock $(PY) -m local.soak --events $(SOAK_EVENTS) --seed $(SOAK_SEED) $(SOAK_ARGS)

# Mutation testing of the decision modules (mutmut 3, [tool.mutmut] in pyproject.toml; docs/mutation.md).
# CPU-heavy: one module at a time on a shared machine, e.g. `make mutation MODULE=search`.
MODULE ?=
mutation: venv
	nice -n 10 $(VENV)/bin/mutmut run --max-children 2 $(if $(MODULE),"capi_relay.$(MODULE).*") ; \
	$(PY) scripts/mutation_score.py $(MODULE)

lock: venv
	$(UV) pip compile pyproject.toml --extra dev --python-version $(PY_VERSION) -o requirements-dev.lock -q

countries: venv
	$(PY) scripts/gen_countries.py > src/capi_relay/_countries.py
	$(PY) scripts/gen_country_names.py > src/capi_relay/_country_names.py

clean:
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache
