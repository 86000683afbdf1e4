# Every target creates .venv and installs what it needs, so a fresh clone runs `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench bench-report notebooks docs experiments clean lock

LOCK := requirements.lock

# Install the locked versions (the ones the tests and BENCHMARKS.md ran with), then the package
# itself without resolving anything again, so two machines never drift apart.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

# Resolve pyproject.toml's ranges afresh in a scratch environment and pin what came out.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet ".[test,bench,arviz,docs]"
	{ echo "# The tested versions: \`make\` installs exactly these, then nflows_jax itself with --no-deps."; \
	  echo "# Regenerate with \`make lock\` (resolves pyproject.toml's ranges afresh); BENCHMARKS.md names the same."; \
	  .venv-lock/bin/pip freeze --all --exclude-editable | grep -v -i "^nflows.jax"; } > $(LOCK)
	rm -rf .venv-lock
	@echo "Wrote $(LOCK); run make clean test, then make bench to refresh BENCHMARKS.md"

demo: $(STAMP)
	$(PY) experiments/toy2d.py --quick --out runs/demo
	@echo "Open runs/demo/demo.png (data, learnt density and samples per dataset); metrics in runs/demo/metrics.json"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Two pytest workers (pytest-xdist): most of the suite's time is XLA compiling, one core per
# compile, so two workers use a 2-core CI machine fully. More workers than cores only adds memory
# (each worker holds its own JAX); set TEST_WORKERS=0 to run in one process.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest tests $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

# Every benchmark in one command (about two hours on 2 CPU cores): each script writes its JSON to
# benchmarks/results/, then bench-report rewrites every generated table and figure in BENCHMARKS.md
# and the machine and package versions they ran on. `make bench QUICK=1` is the smoke run (minutes;
# writes to runs/bench-quick/, leaves BENCHMARKS.md alone).
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(if $(QUICK),--quick)

bench-report: $(STAMP)
	$(PY) benchmarks/report.py

# Run every tutorial notebook in its full configuration and save outputs and figures into it.
notebooks: $(STAMP)
	$(PY) notebooks/execute.py --size full --write notebooks/*.ipynb

# The API reference and the notebooks as one HTML site in docs/_build/html, offline, warnings as
# errors; -E rebuilds every page, so a warning is never hidden by an earlier build.
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html
	@echo "Open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache docs/_build
