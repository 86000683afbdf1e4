# Every target creates .venv and installs what it needs, so a fresh clone runs `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench experiments clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/toy2d.py --quick --out runs/demo
	@echo "Figures and metrics written under runs/demo/"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) benchmarks/flows_2d.py
	$(PY) benchmarks/mcmc.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
