# Set-up and everyday commands. `make demo` and `make test` are the two the README opens with.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint typecheck up down status clean

$(BIN)/nexus: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/nexus

install: $(BIN)/nexus

demo: install  ## the whole five-phase digits workflow on an embedded NATS and Postgres
	$(BIN)/nexus demo

# TEST_WORKERS=3 runs the suite in three pytest-xdist workers, a test module each at a
# time, each with its own database, NATS and ports (tests/infrastructure.py): 8.5 minutes
# on a 2-core machine where one process takes 11 to 13 (the suite is CPU-bound there). Not
# yet the default: the hang and the port races it showed are fixed, but it has yet to pass
# CI more than once.
TEST_WORKERS ?= 0

test: install  ## the test suite (real Postgres and NATS: configured, containers, or embedded)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

up: install
	$(BIN)/nexus up

down:
	$(BIN)/nexus down

status:
	$(BIN)/nexus status

clean: down
	rm -rf .nexus
