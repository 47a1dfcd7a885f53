# Two commands on a fresh machine (see README):
#   make study   set everything up, then run the default study
#   make test    set everything up, then run the tests (what .ci/run calls)
# Both are idempotent: the environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUNS   ?= runs
PYTEST_ARGS ?=
ARGS ?=

.PHONY: study test lint bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The embedded default study (search_spaces/quick.yaml): synthetic data, managed MLflow server,
# local Ray. Extra launcher options: make study ARGS="--smoke-test".
study: $(STAMP)
	$(PY) -m study.launch --runs-dir $(RUNS) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) bench/trainable.py

clean-venv:
	rm -rf $(VENV)
