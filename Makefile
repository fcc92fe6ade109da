# Countersign: `make run` serves the app with no servers installed; `make test` runs the suite.

SHELL := /bin/bash
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
DEV_STAMP := $(VENV)/.requirements-dev.stamp
LLM_STAMP := $(VENV)/.requirements-llm.stamp
PORT ?= 8000
PYTEST_ARGS ?=
# Where a test run keeps its database and Redis socket; two runs at once need two.
TEST_VAR ?= var/test

# Django 6.1 needs Python 3.12 or newer; `python3` is often older. The first candidate that
# runs and is new enough wins (a pyenv shim that cannot run is skipped). Override: make PYTHON=...
PYTHON ?= $(shell for c in python3.13 python3.12 \
		$${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3.1[2-9] \
		/usr/bin/python3.13 /usr/bin/python3.12 /usr/local/bin/python3.13 /usr/local/bin/python3.12 python3; do \
	p=$$(command -v $$c 2>/dev/null) || continue; \
	$$p -c 'import sys; sys.exit(sys.version_info < (3,12))' >/dev/null 2>&1 && { echo $$p; break; }; \
	done)

.PHONY: run test lint bench venv llm

run: $(STAMP)
	@export DEBUG=$${DEBUG:-1}; \
	$(VPY) manage.py migrate --no-input -v 0 && \
	$(VPY) manage.py seed_demo && \
	exec $(VPY) manage.py serve --port $(PORT)

# Tests keep their own database and Redis socket: they never touch the dev data of `make run`.
test: $(DEV_STAMP)
	DEBUG=1 COUNTERSIGN_VAR_DIR=$(CURDIR)/$(TEST_VAR) $(VPY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	DEBUG=1 COUNTERSIGN_VAR_DIR=$(CURDIR)/var/lint $(VPY) -m mypy .
	DEBUG=1 COUNTERSIGN_VAR_DIR=$(CURDIR)/var/lint $(VENV)/bin/lint-imports

# The real processes on both stacks (BENCH_ARGS="--stack embedded", "--scale 0.1"); the table is
# printed and bench/results/<date>-<stack>.json written. README: Performance.
BENCH_ARGS ?=
bench: $(DEV_STAMP)
	DEBUG=1 $(VPY) -m bench $(BENCH_ARGS)

venv: $(VPY)

$(VPY):
	@if [ -z "$(PYTHON)" ]; then \
		echo "Countersign needs Python 3.12 or newer (Django 6.1 requires it) and none was found." >&2; \
		echo "Install one, e.g. 'apt-get install python3.12 python3.12-venv' or 'pyenv install 3.12'," >&2; \
		echo "or point at it: make PYTHON=/path/to/python3.12 $(MAKECMDGOALS)" >&2; \
		exit 1; \
	fi
	@echo "Creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# pip runs again only when a requirements file changes (or the venv is new).
$(STAMP): requirements.txt | $(VPY)
	@$(VPY) -c 'import sys; sys.exit(sys.version_info < (3,12))' || { \
		echo "$(VENV) uses Python older than 3.12: remove it (rm -rf $(VENV)) and run make again." >&2; exit 1; }
	$(VPY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(VPY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	@touch $@

# `make llm`: the real model of the `llm` tests (tests/llm). llama.cpp is built for a portable
# x86-64 (AVX2), not -march=native: a CPU may report instructions (AMX) its sandbox refuses.
llm: $(LLM_STAMP)

$(LLM_STAMP): requirements-llm.txt $(DEV_STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(VPY) -m pip install --disable-pip-version-check -q -r requirements-llm.txt
	@touch $@
