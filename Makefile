# The two commands users need: `make demo` (the main job, end to end; MODE=ssh|local|rest)
# and `make test`.
# Both set up everything themselves on a fresh Debian 12 machine (run as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIOMERO := $(VENV)/bin/biomero
LOCAL_CONFIG := localslurm/run/slurm-config.ini
SHELL_SCRIPTS := localslurm/up localslurm/down localslurm/status localslurm/ctl localslurm/lib.sh \
	tools/install-container-tools tools/install-omero-py tools/install-system-packages \
	tools/install-peer-biomero \
	tools/run-tests tools/demo tools/build-zeroc-ice tools/lock-requirements \
	startup/45-biomero-config.sh tools/fetch-plugin-wheels

.PHONY: all venv omero plugin-wheels cluster cluster-down tools lint test unit integration demo clean

all: test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# MODE=ssh (default), local or rest: how `make demo` reaches Slurm (docs/modes.md).
MODE ?= ssh

cluster:
	localslurm/up $(if $(filter rest,$(MODE)),--rest)

cluster-down:
	localslurm/down

tools: venv
	tools/install-container-tools

lint: venv tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	shellcheck -x -P SCRIPTDIR $(SHELL_SCRIPTS)

omero: venv
	tools/install-omero-py

plugin-wheels: venv
	tools/fetch-plugin-wheels

unit: venv omero plugin-wheels
	$(PY) -m pytest -q tests/unit

integration: venv omero cluster
	$(PY) -m pytest -q tests/integration

# Installs everything, builds omero-py's zeroc-ice beside the first tests (tools/run-tests).
test:
	tools/run-tests

demo: venv cluster
	MODE=$(MODE) tools/demo

clean:
	rm -rf $(VENV) .venv-peer .pytest_cache .ruff_cache
