# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0

.PHONY: demo test test-all bench results clean

$(VENV)/.installed: pyproject.toml setup.py src/darkknowledge/_fused_kd.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

## demo: set up and run the main job on the embedded default data (digits)
demo: $(VENV)/.installed
	$(VENV)/bin/darkknowledge run --out runs/digits --force

## test: set up and run the fast test suite (what CI runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" src tests

## test-all: the fast suite and the slow experiment tests
test-all: $(VENV)/.installed
	$(PY) -m pytest -q src tests

## bench: the speed and memory benchmarks (ratios printed side by side)
bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache runs
