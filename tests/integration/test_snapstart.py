"""SnapStart: no connection, secret or random state crosses a snapshot.

The hooks are called as the runtime calls them (``snapshot_restore_py``'s registries, in order):
each API function's init and its before-snapshot primers open no socket at all (so fetch no
secret), and leave the idempotency store loaded; in-process, a pool, a Buffr client and a cached
secret held before the snapshot are gone after it and after a restore, and two restored copies
of one snapshot draw different random numbers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "arn:aws:secretsmanager:af-south-1:123456789012:secret:smartpay/prod/x-AbC123"
API_FUNCTIONS = {"authorizer": [], "beneficiaries": [], "disburse": ["issue"], "webhook": ["webhook"]}

pytestmark = pytest.mark.integration

PROBE = """
import json, socket, sys
attempts = []
def refuse(self, address, *args):
    attempts.append(repr(address))
    raise OSError("no network before the snapshot")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
import importlib
importlib.import_module(sys.argv[1] + ".handler")
import snapshot_restore_py as hooks
for func, args, kwargs in list(hooks._before_snapshot_registry):
    func(*args, **kwargs)
from smartpay import idempotency
print(json.dumps({"attempts": attempts, "before": len(hooks._before_snapshot_registry),
                  "after": len(hooks._after_restore_registry), "layers": sorted(idempotency._layers),
                  "pool": sys.modules["smartpay.db"]._pool is None if "smartpay.db" in sys.modules else True}))
"""


def _deployed_env(function: str) -> dict[str, str]:
    """The function's environment as deployed: every secret by ARN, nothing local."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "BUFFR", "WEBHOOK", "API_KEYS"))}
    return {**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions" / function), str(ROOT / "layers" / "core")]),
            "_HANDLER": f"{function}.handler.lambda_handler", "STAGE": "prod", "POWERTOOLS_SERVICE_NAME": function,
            "AWS_DEFAULT_REGION": "af-south-1", "AWS_REGION": "af-south-1", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "DATABASE_URL_SECRET": SECRET, "DATABASE_HOST": "proxy.internal",
            "DB_ROLE": f"smartpay_{function}", "IDEMPOTENCY_TABLE": f"smartpay-{function}-idempotency-prod",
            "BUFFR_API_URL": "https://api.buffr.example", "BUFFR_API_KEY_SECRET": SECRET,
            "WEBHOOK_SECRET_SECRET": SECRET, "API_KEYS_PATH": "/smartpay/prod/api-keys"}


@pytest.mark.parametrize("function", sorted(API_FUNCTIONS))
def test_init_and_priming_open_no_connection_and_load_the_first_requests_store(function: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, function], env=_deployed_env(function), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["attempts"] == [], f"{function} connected before the snapshot: {probe['attempts']}"
    assert (probe["before"], probe["after"]) == (1, 1), f"{function} registers its SnapStart hooks once"
    assert probe["layers"] == sorted(API_FUNCTIONS[function]) and probe["pool"]


def _hooks() -> tuple[Any, Any]:
    import snapshot_restore_py as hooks

    from smartpay import snapstart

    snapstart.register()
    before = [(f, a, k) for f, a, k in hooks._before_snapshot_registry if f is snapstart.before_snapshot][-1]
    after = [(f, a, k) for f, a, k in hooks._after_restore_registry if f is snapstart.after_restore][-1]
    return (lambda: before[0](*before[1], **before[2])), (lambda: after[0](*after[1], **after[2]))


def test_no_pool_client_or_cached_secret_crosses_the_snapshot(db_env, aws_env, monkeypatch) -> None:
    from aws_lambda_powertools.utilities import parameters
    from moto import mock_aws

    from smartpay import buffr, db, settings

    before_snapshot, after_restore = _hooks()
    with mock_aws():
        ssm = boto3.client("ssm")
        ssm.put_parameter(Name="/smartpay/test/key", Value="before", Type="SecureString")
        monkeypatch.setenv("BUFFR_API_KEY_PARAMETER", "/smartpay/test/key")
        monkeypatch.setenv("BUFFR_API_URL", "http://127.0.0.1:9")
        parameters.clear_caches()
        with db.connection() as conn:  # what a warm container holds
            conn.execute("SELECT 1")
        buffr.client()
        assert settings.secret("BUFFR_API_KEY") == "before" and db._pool is not None and buffr._client is not None

        before_snapshot()
        assert db._pool is None and buffr._client is None
        ssm.put_parameter(Name="/smartpay/test/key", Value="rotated", Type="SecureString", Overwrite=True)
        assert settings.secret("BUFFR_API_KEY") == "rotated"  # fetched anew, not from the snapshot

        with db.connection() as conn:
            conn.execute("SELECT 1")
        after_restore()
        assert db._pool is None and buffr._client is None
        ssm.put_parameter(Name="/smartpay/test/key", Value="after-restore", Type="SecureString", Overwrite=True)
        assert settings.secret("BUFFR_API_KEY") == "after-restore"
    parameters.clear_caches()


def test_two_restored_copies_of_one_snapshot_draw_different_numbers() -> None:
    before_snapshot, after_restore = _hooks()
    before_snapshot()
    snapshot = random.getstate()
    draws = []
    for _ in range(2):  # two environments restored from the same snapshot
        random.setstate(snapshot)
        after_restore()
        draws.append([random.random() for _ in range(4)])
    assert draws[0] != draws[1]
