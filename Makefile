# Every install step lives here: CI runs on a clean checkout with only Python.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format docs demo bench bench-quick bench-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# PYTEST_ARGS narrows a run (make test PYTEST_ARGS='-k smtp'). Any failure fails, including
# pytest's exit 5 for a selection that collected no test: a run that tested nothing is not green.
test: install
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict fluxmail

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: install
	$(BIN)/python -m fluxmail.docgen
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

demo: install
	sh scripts/demo.sh $(BIN)/fluxmail

bench-deps:
	@[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -yq postfix; }

bench: install bench-deps
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

bench-quick: install bench-deps
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf $(VENV) site build dist .pytest_cache .mypy_cache .ruff_cache
