# Each target sets up .venv itself, so a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./runs_log
HOST ?= 127.0.0.1
PORT ?= 7780

.PHONY: run test test-slow lint typecheck bench clean

# The real agent CLIs and MCP tools the tests drive, pinned in package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/od-runs serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# Lint is style and types: ruff, then mypy --strict over src/ (settings in pyproject.toml).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

# mypy --strict over src; its settings are [tool.mypy] in pyproject.toml.
typecheck: $(VENV)/.installed-test
	$(BIN)/mypy src

# Debian packages the tests need, installed only when missing. The first install to run does
# the one `apt-get update` (under flock: they run side by side under -j3), and each install
# waits for dpkg's lock instead of failing on it.
APT_UPDATE := mkdir -p build && flock build/.apt.lock sh -c \
	'[ -e build/.apt-updated ] || { apt-get update -qq && touch build/.apt-updated; }'
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600

# The web monitor's browser tests drive Debian's Chromium (Playwright downloads none).
/usr/bin/chromium:
	$(APT_UPDATE)
	$(APT_INSTALL) chromium

# The storage contract runs on a throwaway PostgreSQL server (tests/pg.py: initdb, postgres).
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) /usr/lib/postgresql/15/bin/initdb)
$(PG_INITDB):
	$(APT_UPDATE)
	$(APT_INSTALL) postgresql

# The Python, npm and apt installs are independent downloads: run them side by side.
test:
	$(MAKE) --no-print-directory -j3 --output-sync=target lint node_modules/.installed /usr/bin/chromium \
		$(PG_INITDB)
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# The slow end-to-end tests (pytest -m slow): CI runs them right after `make test` (.ci/run),
# so `make test` stays a few minutes on 2 cores and nothing goes untested.
test-slow: $(VENV)/.installed-test node_modules/.installed /usr/bin/chromium $(PG_INITDB)
	$(BIN)/python -m pytest -q -n 2 -m slow

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) node_modules build *.egg-info src/*.egg-info
