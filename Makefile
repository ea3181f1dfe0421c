# Single entry points. Each target creates its own virtualenv on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,nn]'
	touch $(STAMP)

## Main job on the embedded default: synthetic market -> train per symbol -> backtest (offline, no keys).
demo: $(STAMP)
	$(BIN)/perpbot demo

## The whole test suite (real-data tier runs when ../shared/data exists).
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

bench: $(STAMP)
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) demo_out
