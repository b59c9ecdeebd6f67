"""Fixtures for the reconciliation tests: in-process reconcile wiring, bulk vouchers, drift at Buffr."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from smartpay_tools.local.lambda_runtime import FakeLambdaContext
from smartpay_tools.local.services import url_as
from tests import factories


@pytest.fixture()
def reconcile_env(pg: psycopg.Connection[Any], pg_url: str, sim: Any,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """In-process reconcile code as its own database role, talking to the simulator over HTTP.

    ``env["activate"]()`` (re)applies the settings: a test that first drives another in-process
    function (e.g. the webhook, as its own role) calls it before reconciling.
    """
    from smartpay import buffr, db

    env = {
        "DATABASE_URL": url_as(pg_url, "smartpay_reconcile"),
        "BUFFR_API_URL": sim.url,
        "BUFFR_API_KEY": sim.api_key,
        "BUFFR_CONNECT_TIMEOUT_S": "1",
        "BUFFR_READ_TIMEOUT_S": "1",
        "BUFFR_MAX_ATTEMPTS": "3",
        "BUFFR_BACKOFF_BASE_MS": "10",
        "BUFFR_BACKOFF_CAP_MS": "50",
        "BUFFR_CONCURRENCY": "50",
        "RECONCILE_SAFETY_MARGIN_S": "0.3",
        "RECONCILE_PENDING_GRACE_S": "600",
        "POWERTOOLS_SERVICE_NAME": "reconcile",
    }

    def activate() -> None:
        monkeypatch.delenv("DATABASE_URL_SECRET", raising=False)
        monkeypatch.delenv("DISBURSE_FUNCTION_NAME", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        db.close_pool()
        buffr.reset_client()

    activate()
    yield {**env, "activate": activate}
    db.close_pool()
    buffr.reset_client()


def lambda_context(seconds: float = 60.0) -> FakeLambdaContext:
    return FakeLambdaContext("smartpay-reconcile-local", 1024, str(uuid.uuid4()), time.time() * 1000 + seconds * 1000)


_seeded = 90_000_000_000  # ID numbers of seeded beneficiaries: a counter, never a collision


def seed_vouchers(pg: psycopg.Connection[Any], n: int, *, status: str = "active", amount_cents: int = 140000,
                  cycle: str = "2026-11", age_seconds: int = 3600, programme: str = "old_age") -> list[str]:
    """``n`` vouchers (one beneficiary each) in ``status``, changed ``age_seconds`` ago, by COPY.

    Ids are returned in the order inserted; each gets its ``issued`` audit row like the factories'.
    """
    global _seeded
    ids = [str(uuid.uuid4()) for _ in range(n)]
    people = [str(uuid.uuid4()) for _ in range(n)]
    with pg.cursor() as cur:
        with cur.copy("COPY beneficiaries (id, id_number, first_name, last_name, msisdn, region, programme) "
                      "FROM STDIN") as copy:
            for i, b in enumerate(people):
                copy.write_row((b, f"{_seeded + i:011d}", "Test", "Person",
                                f"+26481{i % 10**7:07d}", "Khomas", programme))
        # Born issued (the database refuses anything else), then moved on to ``status`` in one UPDATE.
        with cur.copy("COPY vouchers (id, beneficiary_id, programme, cycle, amount_cents, issued_at, expires_at, "
                      "status_changed_at) FROM STDIN") as copy:
            for v, b in zip(ids, people, strict=True):
                copy.write_row((v, b, programme, cycle, amount_cents, _ago(age_seconds + 60), _ago(-30 * 86400),
                                _ago(age_seconds)))
        if status == "pending":  # claimed: only a voucher of a run under way may be (migration 0014)
            factories.in_run(pg, ids, programme=programme, cycle=cycle)
        if status != "issued":
            cur.execute("""UPDATE vouchers SET status = %s, status_changed_at = %s,
                                  buffr_delivery_id = CASE WHEN %s THEN NULL ELSE 'dlv_' || left(id::text, 8) END
                            WHERE id = ANY(%s::uuid[])""",
                        (status, _ago(age_seconds), status == "pending", ids))
        _seeded += n
    return ids


def _ago(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))


def at_buffr(sim: Any, voucher_ids: list[str], *, status: str = "active", amount: int = 140000) -> None:
    """Make Buffr hold these vouchers (as after a successful disbursement), in ``status``."""
    sim.load([{"voucher_id": v, "status": status, "amount": amount} for v in voucher_ids])
