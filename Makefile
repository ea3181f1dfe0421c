# Single entry points. Each target creates its own virtualenv on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: the demo needs only the core set (no torch: about a minute of install on a fresh
# machine); the tests, lint and benchmarks add the dev tools and the neural-net extra.
CORE_STAMP := $(VENV)/.installed-core
FULL_STAMP := $(VENV)/.installed-full

.PHONY: demo test lint bench clean

$(CORE_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(CORE_STAMP)

$(FULL_STAMP): $(CORE_STAMP)
	$(BIN)/pip install --quiet -e '.[dev,nn]'
	touch $(FULL_STAMP)

## Main job on the embedded default: synthetic market -> train per symbol -> backtest (offline, no keys).
demo: $(CORE_STAMP)
	$(BIN)/perpbot demo

## The whole test suite (real-data tier runs when ../shared/data exists).
test: $(FULL_STAMP)
	$(BIN)/python -m pytest -q

lint: $(FULL_STAMP)
	$(BIN)/ruff check src tests bench scripts

bench: $(FULL_STAMP)
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) demo_out
