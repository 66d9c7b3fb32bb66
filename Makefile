# Two commands from a fresh clone: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test test-js install lint format chromium nginx prometheus loadtest clean

# The Python client library (client/) is its own distribution, installable alone with
# `pip install ./client`; the dev install adds it editable, so tests and examples use it.
# uv installs into the venv (pip bootstraps it there): it downloads in parallel and keeps a
# cache, so a fresh clone's install takes about 1 minute instead of pip's 1 to 4.5 here
# (README, "Development").
$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'uv>=0.13,<0.14'
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]' -e ./client
	touch $(STAMP)

# The first install also writes .env.dev (DEBUG=1 and a new SECRET_KEY), which every
# process started from this checkout reads: manage.py, the stack, Celery (tickerproject/env.py).
install: $(STAMP)
	@$(BIN)/python -m tickerproject.env

run: install
	$(BIN)/python -m tickerproject.stack run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

chromium:
	@scripts/ensure-chromium.sh

# Debian's nginx for the scale-out and compose tests (tests/test_scaleout.py).
nginx:
	@scripts/ensure-nginx.sh

# Debian's prometheus and promtool for the operations tests (tests/test_ops_live.py).
prometheus:
	@scripts/ensure-prometheus.sh

# The dashboard's JS unit tests: node's built-in test runner, no npm packages.
NODE ?= node
test-js:
	@command -v $(NODE) >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs; }
	@command -v $(NODE) >/dev/null || { echo "The JS unit tests need Node.js >= 18: run 'apt-get install nodejs' as root" >&2; exit 1; }
	$(NODE) --test tests/js/*.test.mjs

# The suite in three parts (scripts/test-suite.sh): most of it in TEST_WORKERS processes with
# the browser tests beside it in a process of their own, then the tests marked `serial`
# (they assert timings or load figures, tests/conftest.py lists them) in SERIAL_WORKERS
# processes with nothing else running. PYTEST_ARGS is passed to every part.
TEST_WORKERS ?= 4
SERIAL_WORKERS ?= 2
export TEST_WORKERS SERIAL_WORKERS PYTEST_ARGS
test: install lint chromium nginx prometheus test-js
	scripts/test-suite.sh

# Load-test a running stack (default: the local one); e.g. make loadtest ARGS="--clients 1000".
loadtest: install
	$(BIN)/python manage.py loadtest $(ARGS)

clean:
	rm -rf $(VENV) var staticfiles db.sqlite3
