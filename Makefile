# Two commands a user needs: `make run` (install + train the default MNIST-1D run) and
# `make test` (install + lint + type-check + the whole test suite). CI runs `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format

$(BIN)/dlsuite: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/dlsuite

run: install
	$(BIN)/dlsuite train configs/mnist1d_cnn.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest
