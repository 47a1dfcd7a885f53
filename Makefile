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

.PHONY: study test report lint bench chromium postgresql clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The embedded default study (search_spaces/quick.yaml): synthetic data, managed MLflow server,
# local Ray. Extra launcher options: make study ARGS="--smoke-test".
study: $(STAMP)
	$(PY) -m study.launch --runs-dir $(RUNS) $(ARGS)

# Headless Chromium (Debian's package) for the HTML-report test; installed once, as root.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL's server programs (Debian's package: initdb, pg_ctl under /usr/lib/postgresql/*/bin)
# for the runs folder's own PostgreSQL (--backend-store-uri postgres) and its tests; installed
# once, as root. Debian's package also creates the unprivileged 'postgres' user that the
# database runs as when the launcher runs as root (PostgreSQL refuses root). The cluster the
# package sets up by default is not used: stop and disable it if you do not need it.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

test: $(STAMP) chromium postgresql
	$(PY) -m pytest $(PYTEST_ARGS)

# Rebuild a study's report from MLflow: make report ARGS="--study quick"
report: $(STAMP)
	$(PY) -m dashboards.report --runs-dir $(RUNS) $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) bench/trainable.py

clean-venv:
	rm -rf $(VENV)
