"""A database outage is a clean 503 problem with Retry-After, never a 500; recovery is transparent."""

import json

import psycopg
import pytest

from smartpay import db
from smartpay_tools.local.events import api_event, buffr_authorizer
from smartpay_tools.local.lambda_runtime import FakeLambdaContext
from tests import factories

pytestmark = pytest.mark.integration


def _verify_event(id_number: str) -> dict:
    return api_event("POST", "/api/v1/beneficiaries/verify", headers={"content-type": "application/json"},
                     body=json.dumps({"id_number": id_number}), authorizer=buffr_authorizer())


def _context() -> FakeLambdaContext:
    import time

    return FakeLambdaContext("beneficiaries", 512, "req-1", time.time() * 1000 + 29000)


def test_unreachable_database_is_503(monkeypatch) -> None:
    from beneficiaries.handler import lambda_handler

    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    monkeypatch.setenv("DB_POOL_TIMEOUT_S", "1")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "1")
    db.close_pool()
    try:
        reply = lambda_handler(_verify_event("85010112345"), _context())
    finally:
        db.close_pool()
    assert reply["statusCode"] == 503
    assert reply["multiValueHeaders"]["Retry-After"] == ["5"]
    body = json.loads(reply["body"])
    assert body["status"] == 503 and "database" in body["detail"].lower()


def test_dropped_connection_is_replaced_transparently(pg, db_env) -> None:
    from beneficiaries.handler import lambda_handler

    b = factories.beneficiary(pg)
    assert lambda_handler(_verify_event(b["id_number"]), _context())["statusCode"] == 200
    # kill every server connection the pool holds, as a failover or idle timeout would (between
    # requests: wait until they are gone, as they would be by the time the next request comes)
    with psycopg.connect(db_env, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    reply = lambda_handler(_verify_event(b["id_number"]), _context())
    assert reply["statusCode"] == 200 and json.loads(reply["body"])["match"] is True


def test_a_batch_connection_killed_mid_way_is_503_and_the_next_one_works(pg, db_env) -> None:
    """``db.autocommit()`` (the disbursement batch's connection) losing its server mid-batch: a clean
    DatabaseUnavailable (503), not an error from restoring the connection, and the pool recovers."""
    from smartpay.errors import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable), db.autocommit() as conn:
        pg.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
        conn.execute("SELECT 1")
    with db.autocommit() as conn:
        assert conn.execute("SELECT 1 AS ok").fetchone() == {"ok": 1}
    with db.connection() as conn:
        assert conn.autocommit is False


def test_code_ahead_of_its_migration_is_503_and_changes_nothing_until_migrate_has_run(pg, db_env) -> None:
    """A deploy updates the functions before migrate runs: a transition function the code calls and
    the schema does not have yet is a 503 the caller retries (never a 500), with nothing written."""
    from smartpay.errors import DatabaseUnavailable
    from smartpay.transitions import transition

    v = factories.voucher(pg, factories.beneficiary(pg)["id"], status="active")
    events = factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"])
    pg.execute("ALTER FUNCTION public.smartpay_transition_many(jsonb, uuid[], text, text) "
               "RENAME TO smartpay_transition_many_not_yet")
    try:
        with pytest.raises(DatabaseUnavailable), db.transaction() as conn:
            transition(conn, v["id"], "redeemed", source="webhook", reference="wh_1")
        assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["status"] == "active"
        assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"]) == events
    finally:
        pg.execute("ALTER FUNCTION public.smartpay_transition_many_not_yet(jsonb, uuid[], text, text) "
                   "RENAME TO smartpay_transition_many")
    with db.transaction() as conn:  # migrated: the same call applies
        assert transition(conn, v["id"], "redeemed", source="webhook", reference="wh_1").applied
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"]) == events + 1
