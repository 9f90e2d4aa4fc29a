# Two commands set everything up: `make run` and `make test`.
# Both create .venv when it is missing and reuse it afterwards; the install
# re-runs only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/quickstart.yaml
PYTEST_ARGS ?=
# Test files run two at a time, each whole on one worker (its module fixtures start once);
# TEST_WORKERS=0 runs them one by one in this process.
TEST_WORKERS ?= 2

.PHONY: run test test-fast bench services ui-screenshot clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[test]"
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/ganflow run --config $(CONFIG)

test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -m benchmarks.run

services: $(VENV)/.installed
	$(VENV)/bin/ganflow services

# What an operator sees in the Prefect UI after a run (needs Debian's chromium package).
ui-screenshot: $(VENV)/.installed
	$(PY) -m infra.ui_screenshot --out docs

clean:
	rm -rf .ganflow
