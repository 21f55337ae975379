# The two commands of the README's quick start:
#   make demo   set everything up; run a local Temporal dev server, a worker and a demo run
#   make test   set everything up; run the test suite against a real Temporal server
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo demo-reset test check chaos bench install bytecode worker clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,dev]'
	touch $(STAMP)

install: $(STAMP)

# The workflow sandbox re-imports the workflow modules for every workflow it starts, and the replay
# tests and the flight recorder import the run's logic with them. Without cached bytecode
# (PYTHONDONTWRITEBYTECODE=1 is common) each of those imports compiles from source: 0.3 ms for
# an AgentRun, 3.5 ms for a workspace control workflow, 6 ms for a replay. compileall writes the
# cache and skips what is up to date.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q contracts runtime policy tools activities workflows recorder airlock bench chaos worker.py

demo: bytecode
	$(BIN)/airlock dev

worker: bytecode
	$(BIN)/airlock worker

# Lint, format and types (strict on contracts/, policy/ and workflows/), the dependencies declared
# against those imported, and imports pointing down the layers (workflow code importing only what
# the sandbox passes through). The same hooks run from .pre-commit-config.yaml.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/deptry .
	$(BIN)/python scripts/check_layers.py

# pytest exits 5 when it collects no test; that fails here like any other non-zero exit.
test: bytecode
	$(BIN)/python -m pytest -q

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,bench]'
	touch $(BENCH_STAMP)

# Figures side by side on one local dev server; nothing asserts on time.
# `make bench BENCH_ARGS=--quick` takes about 3 minutes.
bench: $(BENCH_STAMP) bytecode
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The fault suites in full (the test command runs a short version of each).
chaos: bytecode
	$(BIN)/python -m chaos.run

# Forget the demo's state (back-office data, histories, switches, the secrets key), keeping the
# virtualenv. Refused while a dev server still answers, since it holds .airlock/temporal.db open.
demo-reset:
	@$(PYTHON) -c "import socket, sys; s = socket.socket(); s.settimeout(0.5); \
	sys.exit('make demo-reset: a Temporal server answers on 127.0.0.1:7233; stop make demo first' \
	if s.connect_ex(('127.0.0.1', 7233)) == 0 else 0)"
	rm -rf .airlock

clean:
	rm -rf $(VENV) .airlock .pytest_cache
