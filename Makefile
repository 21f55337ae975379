# The two commands of the README's quick start:
#   make demo   set everything up; run a local Temporal dev server, a worker and a demo run
#   make test   set everything up; run the test suite against a real Temporal server
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test chaos bench install worker clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/airlock dev

worker: $(STAMP)
	$(BIN)/airlock worker

# pytest exits 5 when it collects no test; that fails here like any other non-zero exit.
test: $(STAMP)
	$(BIN)/python -m pytest -q

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,bench]'
	touch $(BENCH_STAMP)

# Figures side by side on one local dev server; nothing asserts on time.
# `make bench BENCH_ARGS=--quick` takes about a minute and a half.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The fault suites in full (the test command runs a short version of each).
chaos: $(STAMP)
	$(BIN)/python -m chaos.run

clean:
	rm -rf $(VENV) .airlock .pytest_cache
