# The two set-up commands of the README:
#   make demo   install the tool from its hashed lock file and audit the embedded demo image
#   make test   install the system packages the tests need, the dev lock, and run the tests
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install install-dev system lint bench-memory bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . || $(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@ $(VENV)/.runtime-installed

install: $(VENV)/.runtime-installed
install-dev: $(VENV)/.dev-installed

demo: install
	$(BIN)/auditor demo

system:
	bash scripts/setup-system.sh

test: system install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check auditor tests fixtures scripts

bench-memory: install-dev
	$(BIN)/python scripts/bench_memory.py

bench: system install-dev
	$(BIN)/python scripts/bench.py

lock: install-dev
	PATH=$(abspath $(BIN)):$$PATH bash scripts/lock.sh

clean:
	rm -rf $(VENV)
