# `make demo` and `make test` work on a fresh machine: they install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PY := $(VENV)/.installed
STAMP_NPM := node_modules/.installed

.PHONY: install demo test test-all clean

install: $(STAMP_PY) $(STAMP_NPM)

$(STAMP_PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(STAMP_NPM): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: install
	$(BIN)/imo demo --summary out/demo-summary.json

test: install
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q -m ''

clean:
	rm -rf out .pytest_cache .hypothesis
