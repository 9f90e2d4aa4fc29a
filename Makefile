# Two commands set everything up: `make run` and `make test`.
# Both create .venv when it is missing and reuse it afterwards; the install
# re-runs only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/quickstart.yaml
PYTEST_ARGS ?=
# Test files run two at a time, each whole on one worker (its module fixtures start once), the
# files that run pipelines in two queues (tests/conftest.py); TEST_WORKERS=0 runs them one by one
# in this process. Then the tests marked `alone`, which load every CPU on purpose, run by themselves.
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

# Both phases always run; exit status 5 (no test selected) fails only when both selected none.
test: $(VENV)/.installed
	@together=0; alone=0; \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not alone" $(PYTEST_ARGS) \
		|| together=$$?; \
	$(PY) -m pytest -m alone $(PYTEST_ARGS) || alone=$$?; \
	if [ $$together -eq 5 ] && [ $$alone -eq 5 ]; then exit 5; fi; \
	for status in $$together $$alone; do case $$status in 0|5) ;; *) exit $$status ;; esac; done

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
