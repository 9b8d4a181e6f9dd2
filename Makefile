# Kestrel: the two commands of the quick start are `make demo` and `make test`.
# Both set up .venv on first use: torch 2.13.0 (CPU build) is installed first and pinned, so pip
# never resolves a multi-GB CUDA build; then the project with its dev extras.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench-quality bench-worker clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]" "torch==$(TORCH_VERSION)"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m deploy.demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

bench-quality: $(STAMP)
	$(PY) benchmarks/quality.py

bench-worker: $(STAMP)
	$(PY) benchmarks/worker_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out
