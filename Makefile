# Single entry points. Each target creates its own virtualenv on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: the demo needs only the core set (no torch: about a minute of install on a fresh
# machine); the tests, lint and benchmarks add the dev tools and the neural-net extra.
CORE_STAMP := $(VENV)/.installed-core
FULL_STAMP := $(VENV)/.installed-full

.PHONY: demo test lint bench clean bytecode

# perpbot's own bytecode, written ahead. An editable install writes none, and where
# PYTHONDONTWRITEBYTECODE is set (CI images, many containers) Python never writes it either, so
# every process (each CLI command, simulator, paper bot and test subprocess) compiled every
# perpbot module from source again: 0.1-0.3 s a process. Only stale or missing files are written.
bytecode: $(CORE_STAMP)
	$(BIN)/python -m compileall -q -j 0 src

$(CORE_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(CORE_STAMP)

$(FULL_STAMP): $(CORE_STAMP)
	$(BIN)/pip install --quiet -e '.[dev,nn]'
	touch $(FULL_STAMP)

## Main job on the embedded default: synthetic market -> train per symbol -> backtest (offline, no keys).
demo: $(CORE_STAMP) bytecode
	$(BIN)/perpbot demo

## The whole test suite (real-data tier runs when ../shared/data exists).
test: $(FULL_STAMP) bytecode
	$(BIN)/python -m pytest -q

lint: $(FULL_STAMP)
	$(BIN)/ruff check src tests bench scripts

bench: $(FULL_STAMP) bytecode
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) demo_out
