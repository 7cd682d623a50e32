# `make demo` and `make test` work on a fresh machine: they install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PY := $(VENV)/.installed
STAMP_NPM := node_modules/.installed

.PHONY: install browser demo test test-all clean

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
	$(BIN)/imo demo --summary out/demo-summary.json $(ARGS)

test: install browser
	$(BIN)/pytest -q

test-all: install browser
	$(BIN)/pytest -q -m ''

# the dashboard's tests render it in headless Chromium (Debian's package); without it they are skipped
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-liberation >/dev/null; } \
		|| echo "warning: could not install chromium (apt-get as root); the dashboard's browser tests will be skipped" >&2

clean:
	rm -rf out .pytest_cache .hypothesis
