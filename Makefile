# One entry point for every check. `make check` is what CI runs (through .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo check lint typecheck test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/digest demo

lint: install
	$(BIN)/ruff check digest tests bench

typecheck: install
	$(BIN)/mypy

test: install
	$(BIN)/python -m pytest

check: lint typecheck test

bench: install
	$(BIN)/python bench/ingest_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data/demo
