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
# time, each with its own database and NATS (tests/infrastructure.py): 5 to 7 minutes on
# a 2-core machine instead of 10. Not yet the default: in one run of four a cluster-service
# test waited there until pytest-timeout ended it, which one process has not shown.
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
