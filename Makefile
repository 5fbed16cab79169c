# Every command CI runs is here; CI runs `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch on CPU-only machines: installed first, so that the project's
# `torch>=2.2` is already met and pip never pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install up test lint bench worker reproduce-all

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

up: install
	$(BIN)/gradwatch up --host $(HOST) --port $(PORT)

worker: install
	$(BIN)/gradwatch worker

lint: install
	$(BIN)/ruff check service workers tests bench migrations

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.venv-bench/bin/python:
	$(PY) -m venv .venv-bench
	.venv-bench/bin/pip install -q mlflow "psycopg[binary]" py-spy

bench: install .venv-bench/bin/python
	$(BIN)/pip install -q -e ".[test,bench]"
	$(BIN)/python -m bench.run_all

# Every study of the reproductions catalogue, end to end through a real worker (PostgreSQL
# and Redis from GRADWATCH_TEST_POSTGRES_URL / GRADWATCH_TEST_REDIS_URL), printing each
# claim's expected and measured numbers; CI's `make test` runs only the studies marked in_ci.
reproduce-all: install
	GRADWATCH_REPRODUCE_ALL=1 $(BIN)/python -m pytest tests/e2e/test_reproductions.py -s -q -k reproduces
