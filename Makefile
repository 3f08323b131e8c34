# One command to set up and run the demo, one to set up and run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || true
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rollouts demo

# Independent tests run on both cores; every test has a timeout (pyproject.toml).
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not e2e" -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench
	$(BIN)/mypy

typecheck: lint

bench: $(STAMP)
	$(BIN)/python bench/promote_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
