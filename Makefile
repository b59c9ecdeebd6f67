# Ketchup SmartPay — one entry point. `make demo` runs the main job; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export AWS_DEFAULT_REGION ?= af-south-1
export SAM_CLI_TELEMETRY := 0

.PHONY: venv demo serve test lint check build bench clean

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

test: venv  ## the whole test suite (unit, integration, contract, fault)
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --template template.yaml

# The Lambda runtime is python3.12: sam build needs that interpreter on PATH (pyenv has it here),
# and the .pyc files must be compiled by that same version. unchecked-hash .pyc files stay valid
# after zip packaging (no mtimes), so Lambda's read-only /opt and /var/task never recompile them.
PY312 ?= $(shell ls -d $$(pyenv root 2>/dev/null || echo /root/.pyenv)/versions/3.12*/bin 2>/dev/null | tail -n1)
build: venv  ## sam build, then compile .pyc for the Lambda runtime (see docs/deployment.md)
	@test -x "$(PY312)/python3.12" || { echo "sam build needs python3.12 (set PY312=/dir/with/python3.12)"; exit 2; }
	PATH="$(PY312):$$PATH" $(BIN)/sam build --template template.yaml
	"$(PY312)/python3.12" -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build >/dev/null
	@echo "built .aws-sam/build with $$(find .aws-sam/build -name '*.cpython-312.pyc' | wc -l) compiled modules"

check: lint test

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache .hypothesis
