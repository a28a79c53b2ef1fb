# Entry points: make setup | make demo | make test | make baselines | make lab | make explore
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/baselines/sanitize.cfg

.PHONY: setup demo test lint unit nbval baselines clean-runs lab explore

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.11).")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,crawl,lab,dask,search]'
	@touch $@

## Run every notebook on the real default data (profile cpu) into reports/runs/demo (a rerun
## reuses the notebooks whose inputs, parameters and code did not change) and publish it
demo: setup
	$(BIN)/python -m lfhelpers run --profile cpu --out reports/runs/demo --publish reports/latest --jobs 2

## Lint, unit tests, the pipeline smoke run (every notebook once) and the check of the baselines
## against that run (tests/test_baselines.py)
test: setup lint
	$(BIN)/python -m pytest tests

## The baselines re-executed by nbval itself (a second run of every notebook)
nbval: setup
	rm -rf tests/baselines/_work
	$(BIN)/python -m pytest $(NBVAL) tests/baselines
	rm -rf tests/baselines/_work

lint: setup
	$(BIN)/ruff check .

## Regenerate the nbval baselines (papermill output of the smoke profile) under tests/baselines
baselines: setup
	rm -rf tests/baselines/_work
	$(BIN)/python tests/make_baselines.py
	rm -rf tests/baselines/_work

## JupyterLab on the project, listening on 127.0.0.1 only (LAB_PORT, default 8888)
LAB_PORT ?= 8888
lab: setup
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
		--ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks

## The explorer (notebook 07) as an app with Voila, on 127.0.0.1 only (EXPLORE_PORT, default 8866).
## Each page visit gets a kernel; one idle for EXPLORE_CULL seconds (default 900: 15 minutes), or
## whose tab is gone, is shut down (checked every minute) and its page offers a fresh one. The
## server takes messages up to 32 MB so that an upload over the explorer's 20 MB limit gets a
## message from the kernel even when the page's own check does not run.
EXPLORE_PORT ?= 8866
EXPLORE_CULL ?= 900
explore: setup
	@echo "Explorer: http://127.0.0.1:$(EXPLORE_PORT)/  (local only; Ctrl-C stops it)"
	$(BIN)/voila notebooks/07_explore.ipynb --no-browser --strip_sources=True --Voila.ip=127.0.0.1 \
		--port=$(EXPLORE_PORT) \
		--MappingKernelManager.cull_idle_timeout=$(EXPLORE_CULL) \
		--MappingKernelManager.cull_interval=60 \
		--MappingKernelManager.cull_connected=True \
		--MappingKernelManager.cull_busy=False \
		"--Voila.tornado_settings={'websocket_max_message_size': 33554432}"
