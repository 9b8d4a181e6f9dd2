# Kestrel: the two commands of the quick start are `make demo` and `make test`.
# Both set up .venv on first use: torch 2.13.0 (CPU build, from PyTorch's CPU wheel index) is
# installed first and pinned, so pip never resolves PyPI's multi-GB CUDA build (the CPU build's
# version, 2.13.0+cpu, sorts above it); then the project with its dev extras and torch's own
# dependencies. TORCH_INDEX_URL= (empty) uses only the configured indexes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench-quality bench-worker clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps --retries 2 $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)) "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]" "torch==$(TORCH_VERSION)"
	$(PY) -c "import torch; assert torch.version.cuda is None, 'a CUDA build of torch was installed'"
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
