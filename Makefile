# dynopt: every target works on a fresh machine with only Python and pip.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# JAX's persistent compilation cache: a second `make run` reuses the compiled programs (most of an
# experiment's time is compilation); `make test` too (a second run loads what the first compiled).
# `make clean` removes it.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0

.PHONY: run test experiments figures bench lint clean install

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# setuptools' editable-install notice is a wall of asterisks before any result: not shown
	PYTHONWARNINGS="ignore::UserWarning" $(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make run: install, run the default experiment suite (JOBS experiments at a time, each in its
## own process: most of a quick run is XLA compiling on one thread), say where the results went
run: $(STAMP)
	$(PY) -m experiments run-all --quick --jobs $(JOBS)
	@echo "results page: $(CURDIR)/results/index.html (per experiment: results/<name>/ with config.json, metrics.json, data.npz, *.png)"

## full-size experiments
experiments: $(STAMP)
	$(PY) -m experiments run-all

## redraw the figures of every saved result (names the experiments without one; runs none)
figures: $(STAMP)
	$(PY) -m experiments figures

## one BLAS thread per test worker: JOBS workers already fill the cores (LAPACK LU inside the
## implicit solvers runs 6-15x slower when OpenBLAS threads fight the other worker)
test: $(STAMP)
	MPLBACKEND=Agg OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) -q --durations=30

## compile times are part of what bench reports: no persistent cache there
bench: $(STAMP)
	JAX_ENABLE_COMPILATION_CACHE=false $(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check dynopt experiments tests benchmarks
	$(VENV)/bin/ruff format --check dynopt experiments tests benchmarks

## make clean: the virtual environment, caches and build files; of results/ only what dynopt wrote
## (result folders with its marker, the page it wrote), never a file of yours
clean:
	@if [ -x $(PY) ]; then $(PY) -m experiments clean; \
	else echo "results/ left as is: without $(VENV), dynopt's results cannot be told from other files"; fi
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
