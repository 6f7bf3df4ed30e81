# One entry point for every check. `make check` is what CI runs (through .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser demo check lint typecheck test bench clean lock

# constraints.txt pins every package (ours and theirs) to the versions the tests last passed
# with, so a test run is reproducible; `make lock` refreshes it from the newest releases.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/digest demo

lint: install
	$(BIN)/ruff check digest tests bench

typecheck: install
	$(BIN)/mypy

# tests/test_browser.py renders a digest in Debian's Chromium; installed here when missing.
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium for tests/test_browser.py"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null || { \
	    $$SUDO apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; }; }

test: install browser
	$(BIN)/python -m pytest

check: lint typecheck test

bench: install
	$(BIN)/python bench/ingest_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data/demo

# Newest releases within pyproject's floors, frozen; then run `make check` before committing.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^digest' > constraints.txt
	rm -rf .lock-venv
