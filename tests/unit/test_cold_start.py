"""What a function's cold start loads and builds, checked in a fresh interpreter per function.

Timings are the benchmark's business (benchmarks/cold_start.py, docs/performance.md); these
tests hold the levers it measured: no module or schema that the first request does not use,
and the collector paused for the imports, then the init frozen (smartpay.coldstart).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smartpay import coldstart
from smartpay_tools.local.template import Template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Template()
FUNCTIONS = TEMPLATE.functions()

# The handler's import, as the Lambda runtime does it, then what it left behind.
PROBE = """
import gc, importlib, json, os, sys
from pydantic import BaseModel
module, _, name = os.environ["_HANDLER"].rpartition(".")
getattr(importlib.import_module(module), name)
package = module.split(".")[0]
def models(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from models(sub)
built = sorted({f"{c.__module__}.{c.__qualname__}" for c in models(BaseModel)
                if c.__module__.split(".")[0] in (package, "smartpay") and c.__pydantic_complete__})
print(json.dumps({"gc_enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
                  "modules": sorted(sys.modules), "built_models": built}))
"""

# Then the SnapStart hooks before the snapshot, as the runtime calls them, and what is loaded after.
PRIMED = PROBE + """
import snapshot_restore_py as hooks
for func, args, kwargs in list(hooks._before_snapshot_registry):
    func(*args, **kwargs)
print(json.dumps({"modules": sorted(sys.modules)}))
"""

#: What a request of these functions imports when it runs, not at init: with SnapStart, the
#: priming hook loads it before the snapshot (a restored copy's first request finds it loaded).
FIRST_REQUEST = {
    "WebhookFunction": {"webhook.service", "webhook.models", "smartpay.signing", "smartpay.transitions",
                        "smartpay.db", "smartpay.idempotency"},
    "DisburseFunction": {"disburse.logic.issue", "disburse.logic.read", "disburse.logic.batch",
                         "disburse.cycle_run.service", "smartpay.internal", "smartpay.issuance", "smartpay.buffr",
                         "smartpay.transitions", "smartpay.db", "smartpay.idempotency"},
}


def _cold_start(logical_id: str, probe: str = PROBE) -> dict:
    spec = FUNCTIONS[logical_id]
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "af-south-1", "STAGE": "local",
           "POWERTOOLS_TRACE_DISABLED": "true", "IDEMPOTENCY_TABLE": "smartpay-idempotency-local",
           "_HANDLER": spec.handler, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(spec.code_uri), *map(str, TEMPLATE.layer_dirs())])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_the_init_runs_without_the_collector_and_ends_frozen(logical_id: str) -> None:
    found = _cold_start(logical_id)
    assert found["gc_enabled"], "coldstart.end() must turn the collector back on"
    assert found["frozen"] > 10_000, "what the init loaded is in the permanent generation"


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_no_model_schema_is_built_at_import(logical_id: str) -> None:
    """Edge models are ``defer_build``: a cold start builds only what its first request validates."""
    assert _cold_start(logical_id)["built_models"] == []


def test_reconcile_loads_neither_the_resolvers_nor_the_report_modules() -> None:
    modules = set(_cold_start("ReconcileFunction")["modules"])
    assert "aws_lambda_powertools.event_handler" not in modules  # smartpay.validation raises it lazily
    assert not modules & {"smartpay.compliance", "smartpay.compliance_render", "reconcile.report"}


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_no_function_loads_botocore_at_init(logical_id: str) -> None:
    """(Powertools' user agent imports botocore's top package, which is 0.5 ms: not its clients.)"""
    assert not {"boto3", "botocore.session", "botocore.client"} & set(_cold_start(logical_id)["modules"])


def test_begin_pauses_only_the_process_running_that_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gc.isenabled()
    monkeypatch.setenv("_HANDLER", "beneficiaries.handler.lambda_handler")
    coldstart.begin("disburse")  # another function's package: not this process's handler
    assert gc.isenabled()
    coldstart.end()  # nothing paused: nothing to do
    assert gc.isenabled() and gc.get_freeze_count() == 0
    monkeypatch.delenv("_HANDLER")
    coldstart.begin("beneficiaries")  # tests and tools import functions without _HANDLER
    assert gc.isenabled()


def test_begin_then_end_freezes_and_turns_the_collector_back_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_HANDLER", "beneficiaries.handler.lambda_handler")
    try:
        coldstart.begin("beneficiaries")
        assert not gc.isenabled()
        coldstart.end()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()


def test_disburse_loads_the_queue_consumer_only_for_queue_events() -> None:
    """The SQS consumer brings Powertools' batch utility and the parser's event models: an API
    cold start of the disburse function does not load them."""
    modules = set(_cold_start("DisburseFunction")["modules"])
    assert not modules & {"disburse.cycle_run.consumer", "aws_lambda_powertools.utilities.batch"}


@pytest.mark.parametrize("logical_id", sorted(FIRST_REQUEST))
def test_use_cases_load_in_the_priming_hook_not_at_init(logical_id: str) -> None:
    """The init stays at the libraries' floor; everything the first request imports is loaded
    before the snapshot all the same."""
    at_init = FIRST_REQUEST[logical_id] & set(_cold_start(logical_id)["modules"])
    assert not at_init, sorted(at_init)
    primed = set(_cold_start(logical_id, PRIMED)["modules"])
    assert FIRST_REQUEST[logical_id] <= primed, sorted(FIRST_REQUEST[logical_id] - primed)
