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

.PHONY: study test lint bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Until the study launcher lands (issue 5) the default "study" prepares and checks the
# embedded synthetic dataset in BCDR-F03's native layout.
study: $(STAMP)
	@test -f $(RUNS)/data/synthetic/BCDR-F03/bcdr_f03_outlines.csv || \
		$(PY) -m study.data synth $(RUNS)/data/synthetic --patients 150 --seed 0
	TLSTUDY_CACHE=$(RUNS)/cache $(PY) -m study.data check $(RUNS)/data/synthetic --format bcdr --roi-size 96

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) bench/trainable.py

clean-venv:
	rm -rf $(VENV)
