# Ketchup SmartPay — one entry point. `make demo` runs the main job; `make test` runs the tests
# (`make unit`: no services, under a minute; `make integration`: PostgreSQL, moto, the local stack).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export AWS_DEFAULT_REGION ?= af-south-1
export SAM_CLI_TELEMETRY := 0

.PHONY: venv demo serve test unit integration lint check build bench clean

$(BIN)/.installed: requirements-dev.txt layers/core/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# Put the layer, the functions and the tools on the venv's path (no copies, no install step).
	@printf '%s\n' "$(CURDIR)/layers/core" "$(CURDIR)/tools" > "$$($(BIN)/python -c 'import site; print(site.getsitepackages()[0])')/smartpay-dev.pth"
	@printf '#!/usr/bin/env bash\nexec "%s" -m smartpay_tools "$$@"\n' "$(CURDIR)/$(BIN)/python" > $(BIN)/smartpay && chmod +x $(BIN)/smartpay
	touch $@

venv: $(BIN)/.installed

demo: venv  ## the main job: local stack + a demo run
	$(BIN)/smartpay demo

serve: venv  ## the local stack on 127.0.0.1:3000 until Ctrl-C
	$(BIN)/smartpay serve

test: venv  ## the whole suite: unit, then integration (docs/testing.md)
	$(BIN)/python -m pytest -q -n 2 tests/unit
	$(BIN)/python -m pytest -q tests/integration tests/contract

unit: venv  ## no services: pure logic, the template, the docs (under a minute, two workers)
	$(BIN)/python -m pytest -q -n 2 tests/unit

integration: venv  ## real PostgreSQL, moto, the Buffr simulator and the local stack (contract tests included)
	$(BIN)/python -m pytest -q tests/integration tests/contract

lint: venv
	$(BIN)/ruff check .
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --template template.yaml

# The Lambda runtime is python3.12: sam build needs that interpreter on PATH, and the .pyc files must be
# compiled by that same version (found from PY312, PATH or pyenv: smartpay_tools/local/lambda_python.py).
# unchecked-hash .pyc files stay valid after zip packaging (no mtimes), so Lambda's read-only /opt and
# /var/task never recompile them.
build: venv  ## sam build, then compile .pyc for the Lambda runtime (see docs/deployment.md)
	@py312="$$($(BIN)/python -m smartpay_tools.local.lambda_python)" || exit 2; \
	set -x; PATH="$$(dirname "$$py312"):$$PATH" $(BIN)/sam build --template template.yaml && \
	"$$py312" -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build >/dev/null
	@echo "built .aws-sam/build with $$(find .aws-sam/build -name '*.cpython-312.pyc' | wc -l) compiled modules"

check: lint test

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache .hypothesis
