# Every target creates .venv and installs what it needs, so a fresh clone runs `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench experiments clean lock

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
	.venv-lock/bin/pip install --quiet ".[test,bench,arviz]"
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

test: lint
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) benchmarks/flows_2d.py
	$(PY) benchmarks/mcmc.py
	$(PY) benchmarks/glow.py
	$(PY) benchmarks/autoregressive.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/adaptation.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
