"""Fixtures for the disbursement tests: the Buffr simulator and in-process disburse wiring."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smartpay_tools.local.lambda_runtime import FakeLambdaContext


@pytest.fixture()
def sim(local_stack: Any) -> Iterator[Any]:
    """The local stack's Buffr simulator (a separate process on a free port), reset for each test."""
    local_stack.buffr.reset()
    yield local_stack.buffr
    local_stack.buffr.reset()


@pytest.fixture()
def disburse_env(db_env: str, local_stack: Any, sim: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """In-process disburse code wired to the test DB (as ``smartpay_disburse``), moto and the simulator.

    Returns the settings dict; tests may change BUFFR_* variables and call ``reconfigure()``.
    """
    from smartpay import buffr, db, idempotency
    from smartpay_tools.local.services import client_env, url_as

    env = {
        **client_env(local_stack.moto.endpoint, local_stack.region),
        "DATABASE_URL": url_as(db_env, "smartpay_disburse"),  # the function's own least-privilege role
        "IDEMPOTENCY_TABLE": next(t.name for t in local_stack.template.tables() if t.logical_id == "DisburseIdempotencyTable"),
        "BUFFR_API_URL": sim.url,
        "BUFFR_API_KEY": local_stack.buffr_api_key,
        "BUFFR_CONNECT_TIMEOUT_S": "1",
        "BUFFR_READ_TIMEOUT_S": "1",
        "BUFFR_MAX_ATTEMPTS": "4",
        "BUFFR_BACKOFF_BASE_MS": "10",
        "BUFFR_BACKOFF_CAP_MS": "100",
        "BUFFR_CONCURRENCY": "100",
        "DISBURSE_DEADLINE_MARGIN_S": "0.5",
    }

    def reconfigure(**changes: str) -> None:
        for key, value in {**env, **changes}.items():
            if isinstance(value, str):
                monkeypatch.setenv(key, value)
        buffr.reset_client()
        db.close_pool()
        idempotency._layers.clear()
        idempotency._configs.clear()

    env["reconfigure"] = reconfigure  # type: ignore[assignment]
    reconfigure()
    yield env
    buffr.reset_client()
    idempotency._layers.clear()
    idempotency._configs.clear()


def lambda_context(seconds: float = 29.0) -> FakeLambdaContext:
    return FakeLambdaContext("smartpay-disburse-local", 1024, str(uuid.uuid4()), time.time() * 1000 + seconds * 1000)
