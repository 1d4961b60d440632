# hcp-etcd: `make test` and `make demo` are all a newcomer needs (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
LOCKED := -r requirements.txt -r requirements-dev.txt -c constraints.txt

.PHONY: venv test test-fast test-prod lint demo demo-down bench lock clean

venv: $(STAMP)

# The virtualenv, with a clear error when the interpreter is too old.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  found=$$(command -v $(PYTHON) >/dev/null && $(PYTHON) -V 2>&1) || found="not found"; \
	  echo "hcp-etcd needs Python >= 3.11, but '$(PYTHON)' is: $$found." >&2; \
	  echo "Install Python 3.11+ and run e.g. 'make test PYTHON=python3.11'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The locked requirements: uv when it can be had (much faster), pip otherwise. Compiled to bytecode
# at install (pip does it by default, uv only when asked): with PYTHONDONTWRITEBYTECODE set, as on
# many CI machines, every Airflow process would otherwise compile its imports from source each time.
$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt constraints.txt
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip -q; \
	if command -v uv >/dev/null 2>&1; then UV=uv; \
	elif $(BIN)/python -m pip install -q "uv==$(UV_VERSION)" 2>/dev/null; then UV=$(BIN)/uv; \
	else UV=; fi; \
	if [ -n "$$UV" ]; then \
	  echo "Installing the locked requirements with $$UV"; \
	  $$UV pip install --compile-bytecode --python $(BIN)/python $(LOCKED); \
	else \
	  echo "uv unavailable: installing the locked requirements with pip"; \
	  $(BIN)/python -m pip install $(LOCKED); \
	fi
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite: five pytest sessions side by side (tests/support/suites.py), outputs in order.
test: lint
	$(BIN)/python -m tests.support.suites

# The production shape (tests/production): docker-compose.yaml's services on Postgres and Redis from the
# distribution's packages, CeleryExecutor with two workers and a triggerer; skipped, naming the
# packages, where they are not installed. Separate from `make test`: six Airflow processes and two
# servers beside the sandbox are a load of their own.
test-prod: $(STAMP)
	$(BIN)/python -m pytest tests/production

# The quick loop: the unit tests and the sandbox tests that need no running sandbox (under a minute).
FAST := tests/unit tests/sandbox/test_apiserver.py tests/sandbox/test_rbac.py tests/sandbox/test_runtime_units.py \
  tests/sandbox/test_rooms.py tests/sandbox/test_crd_suites.py
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(FAST)

# The embedded demo: sandbox + Airflow standalone on the project's DAGs (see README.md).
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash include/demo/run.sh

demo-down: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash include/demo/run.sh down

bench: $(STAMP)
	$(BIN)/python -m bench

# Refresh the lock after changing requirements*.txt; then run `make test`.
lock: $(BIN)/python
	@command -v uv >/dev/null 2>&1 || $(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	@# uv keeps the versions already in constraints.txt where they still fit (no surprise upgrades).
	@UV=$$(command -v uv || echo $(BIN)/uv); $$UV pip compile --universal --python-version 3.11 --no-header \
	  requirements.txt requirements-dev.txt -o constraints.txt
	@{ echo '# The full lock: every package that requirements.txt and requirements-dev.txt resolve to, pinned.'; \
	   echo '# Airflow publishes its constraints files only on GitHub; this file plays that role here.'; \
	   echo '# Refresh with: make lock (uv pip compile --universal --python-version 3.11), then make test.'; \
	   cat constraints.txt; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
	@echo "constraints.txt refreshed; run 'make test'."

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
