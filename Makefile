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
# `make build` ships the compiled core or fails (src/build_core.py; plain `sam build` warns and ships pure Python).
# Only on Linux: the core is compiled against this Python's CPython headers, which must be Linux's.
export CAPI_RELAY_CORE ?= $(if $(filter Linux,$(shell uname -s)),required,)
CORE_DIR := build/core-native
# sam build needs python3.13 on PATH: put the project venv first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Local stack ports (events/env.json names 5000 and 8089; on macOS, where AirPlay holds 5000: LOCAL_MOTO_PORT=5001).
LOCAL_MOTO_PORT ?= 5000
LOCAL_GRAPH_PORT ?= 8089
LOCAL_QUEUE_URL = http://127.0.0.1:$(LOCAL_MOTO_PORT)/123456789012/capi-relay-local-events
# The producer kit's oldest supported Python (pyproject.toml requires-python), tested by `make kit-test`.
# The first that runs of: python3.10 on PATH, a pyenv 3.10, python3.11, a pyenv 3.11, python3.12, python3.
KIT_PYTHON ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10 python3.11 \
  $$HOME/.pyenv/versions/3.11*/bin/python3.11 python3.12 python3; do \
  $$p -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)

.PHONY: help venv sam-cli sam build lint unit core unit-compiled integration integration-compiled e2e test kit-test demo local-stack send bench lock countries clean soak mutation arm64-check

help: ## list every target with what it does (generated from these comments after each target)
	@grep -E '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  make \1\t\2/' | expand -t 22

# requirements-dev.lock pins every test/dev dependency (regenerate: make lock).
$(VENV)/.stamp: pyproject.toml requirements-dev.lock
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --python $(PY) -r requirements-dev.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

venv: $(VENV)/.stamp ## the project venv (.venv: dev tools, editable install, capi-relay on its PATH)

$(SAM_VENV)/.stamp:
	$(PYTHON_BOOT) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(SAM_VENV)/bin/uv pip install -q --python $(SAM_VENV)/bin/python 'aws-sam-cli==$(SAM_CLI_VERSION)'
	touch $@

sam-cli: $(SAM_VENV)/.stamp ## the pinned AWS SAM CLI in .venv-sam (use it through `make sam ARGS=...`)

sam: sam-cli ## run the pinned SAM CLI: make sam ARGS="deploy --guided"
	$(SAM) $(ARGS)

build: venv sam-cli ## sam build: the Lambda artifact in .aws-sam/build
	$(SAM) build --template-file template.yaml

lint: venv sam-cli ## ruff, ruff format, mypy (strict), actionlint, the 3.10 check, sam validate --lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(PY) scripts/check_kit_syntax.py
	$(PY) -m pytest tests/unit -q -m sam

# Unit tests need no SAM CLI: the template lint test (marked `sam`) runs in `make lint`.
unit: venv ## unit tests (no network, no SAM CLI)
	$(PY) -m pytest tests/unit -q -n 2 -m "not sam and not soak and not arm64"

core: venv ## the compiled core for this machine in build/core-native (tests and benchmarks run the C that ships)
	rm -rf $(CORE_DIR) && mkdir -p $(CORE_DIR) && cp -R src/capi_relay $(CORE_DIR)/
	find $(CORE_DIR) -depth -type d -name __pycache__ -exec rm -rf {} +
	$(PY) src/build_core.py --target native --out $(CORE_DIR) --require

unit-compiled: core ## the unit tests again with the compiled core loaded (it must behave as the pure modules do)
	CAPI_RELAY_EXPECT_CORE=compiled PYTHONPATH=$(CURDIR)/$(CORE_DIR) $(PY) -m pytest tests/unit -q -n 2 \
		-m "not sam and not soak and not arm64 and not pure_only" -p no:cacheprovider -o pythonpath=.

integration: venv ## integration tests: moto server and Graph stand-in on real sockets
	$(PY) -m pytest tests/integration -q -m "not soak"

integration-compiled: core ## the integration tests with the compiled core loaded (minutes; not part of make test)
	CAPI_RELAY_EXPECT_CORE=compiled PYTHONPATH=$(CURDIR)/$(CORE_DIR) $(PY) -m pytest tests/integration -q \
		-m "not soak and not pure_only" -p no:cacheprovider -o pythonpath=.

e2e: build ## end-to-end tests: the packaged function under the Lambda RIE (incl. the 300-event soak, ~40 s)
	$(PY) -m pytest tests/e2e -q

test: lint unit unit-compiled integration e2e kit-test ## everything CI runs: lint, unit (pure and compiled), integration, e2e, the producer kit on its oldest Python

# The producer kit (check, send, dlq) installed with `pip install .` on the oldest Python it supports, in a
# venv of its own, and its CLI tests run there (no AWS, no SAM CLI).
kit-test: venv ## install the producer kit on its oldest supported Python (KIT_PYTHON) and run its CLI tests
	@test -n "$(KIT_PYTHON)" || { echo "kit-test: no python3.10/3.11 found" >&2; exit 1; }
	@echo "kit-test: $$($(KIT_PYTHON) --version) ($(KIT_PYTHON))"
	rm -rf .venv-kit && $(UV) venv -q --python $(KIT_PYTHON) .venv-kit
	$(UV) pip install -q --python .venv-kit/bin/python . pytest
	CAPI_RELAY_KIT_TEST=1 .venv-kit/bin/python -m pytest -q -p no:cacheprovider -c /dev/null --rootdir tests/kit --confcutdir tests/kit tests/kit

demo: build ## the whole flow locally (moto + Graph stand-in + packaged function), one outcome table
	$(PY) -m local.demo

local-stack: build ## moto + Graph stand-in + the packaged function (RIE), in the foreground; Ctrl-C stops
	$(PY) -m local.serve --moto-port $(LOCAL_MOTO_PORT) --graph-port $(LOCAL_GRAPH_PORT) $(ARGS)

send: venv ## send FILE (JSON Lines of events, or one message body) to the local stack: make send FILE=...
	@test -n "$(FILE)" || { echo 'usage: make send FILE=examples/first-events.jsonl [ARGS="--pixel-id ..."]' >&2; exit 2; }
	env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local \
	  $(VENV)/bin/capi-relay send --region us-east-1 --endpoint-url http://127.0.0.1:$(LOCAL_MOTO_PORT) \
	  --queue-url $(LOCAL_QUEUE_URL) $(ARGS) $(FILE)

# The artifact's aarch64 code (orjson's extension, a compiled core) run here in an emulated aarch64 CPython 3.13
# (scripts/arm64_python.py: Debian's qemu-user-static + trixie's python3.13, ~90 MB downloaded once into
# $${XDG_CACHE_HOME:-~/.cache}/capi-relay/arm64-python3.13) against src/ on this machine's Python, byte for byte.
# By default every module of the compiled core (capi_relay.compiled) must load from its aarch64 .so file.
ARM64_ARGS ?= --expect-compiled $(shell $(PY) -c 'from capi_relay.compiled import COMPILED_MODULES as m; print(*m)')
arm64-check: build ## the artifact's aarch64 code under qemu vs src/ here: same corpus, byte-identical output (docs/local-development.md)
	$(PY) -m scripts.arm64_check $(ARM64_ARGS)

bench: build core ## benchmarks that print numbers
	$(PY) -m bench.run_all

# Lifecycle soak (issue 17, local/soak.py): minutes, outside `make test`. The default size runs in about
# 5 minutes on 2 shared cores; SOAK_EVENTS=20000 is the issue's full size. Holds the RIE lock like the e2e tests.
SOAK_EVENTS ?= 4000
SOAK_SEED ?= 7
soak: build ## lifecycle soak under the RIE: faults, kills, one redrive, every event's identity and fate checked (minutes; SOAK_EVENTS=20000)
	flock /tmp/capi-rie.lock $(PY) -m local.soak --events $(SOAK_EVENTS) --seed $(SOAK_SEED) $(SOAK_ARGS)

# Mutation testing of the decision modules (mutmut 3, [tool.mutmut] in pyproject.toml; docs/mutation.md).
# CPU-heavy: one module at a time on a shared machine, e.g. `make mutation MODULE=deliver.search`.
MODULE ?=
mutation: venv ## mutmut on the decision modules (MODULE=deliver.search|deliver.throttle|ingest.envelope|fate.letters|fate.ledger|relay; minutes)
	nice -n 10 $(VENV)/bin/mutmut run --max-children 2 $(if $(MODULE),"capi_relay.$(MODULE).*") ; \
	$(PY) scripts/mutation_score.py $(MODULE)

lock: venv ## regenerate requirements-dev.lock from pyproject.toml
	$(UV) pip compile pyproject.toml --extra dev --python-version $(PY_VERSION) -o requirements-dev.lock -q

countries: venv ## regenerate the country tables (src/capi_relay/prepare/_tables/)
	$(PY) scripts/gen_countries.py > src/capi_relay/prepare/_tables/countries.py
	$(PY) scripts/gen_country_names.py > src/capi_relay/prepare/_tables/country_names.py
	$(PY) scripts/gen_date_orders.py > src/capi_relay/prepare/_tables/date_orders.py
	$(PY) scripts/gen_trunk_prefixes.py > src/capi_relay/prepare/_tables/trunk_prefixes.py

clean: ## remove build output and caches
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache .venv-kit
