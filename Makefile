# Set-up and checks for prefect-scenario. Everything runs from the virtual environment in .venv/,
# created on first use from constraints.txt so every machine installs the same versions.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo server test lint typecheck unit bench soak clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "prefect-scenario needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	touch $(STAMP)

## demo: both models on a sample clip, against the embedded emulator, run history kept by Prefect
demo: $(STAMP)
	$(BIN)/python -m prefect_scenario.demo

## server: a Prefect server on a PostgreSQL of its own, in the foreground (Ctrl-C stops both);
## the runs are kept in $(SERVER_DATA)/. SERVER_HOST=0.0.0.0 for workers on other machines.
SERVER_DATA ?= .prefect-server
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 4200
server: $(STAMP)
	$(BIN)/prefect-scenario server start --data-dir $(SERVER_DATA) --host $(SERVER_HOST) --port $(SERVER_PORT)

## test: lint, types, import layers, then the whole test suite (slow end-to-end tests included)
test: lint unit

lint: $(STAMP)
	$(BIN)/ruff check prefect_scenario tests bench examples
	$(BIN)/ruff format --check prefect_scenario tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# Two pytest-xdist workers (CI has 2 cores); the end-to-end modules that share a stack run in two
# groups, one worker each (tests/conftest.py). PYTEST_WORKERS=0 runs everything in one process. The
# slowest tests are listed at the end, to see where CI's time goes.
PYTEST_WORKERS ?= 2
unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup --durations=25

## bench: benchmarks (not tests); writes bench/results/*.json and *.md
bench: $(STAMP)
	$(BIN)/python -m bench

## soak: kill -9 at every phase of both models and of a batch, then a batch under faults (bench/crash.py)
soak: $(STAMP)
	$(BIN)/python -m bench crash

clean:
	rm -rf $(VENV) out .prefect-demo .prefect-server .pytest_cache .mypy_cache .ruff_cache
