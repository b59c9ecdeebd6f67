"""The database refuses what the code must never do, whichever role asks (migration 0011).

* the ``vouchers`` trigger allows exactly the lifecycle's transitions — its table is generated from
  :mod:`smartpay.lifecycle`, and every (from, to) pair is tried here against :func:`decide`;
* a voucher's terms never change after issue; a voucher is born ``issued``;
* ``voucher_events`` is append-only, TRUNCATE included, for everyone but the owner;
* a function connected as another role than its ``DB_ROLE`` refuses to run (503).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import psycopg
import pytest

from smartpay import lifecycle, migrate
from smartpay.lifecycle import VoucherStatus, decide
from smartpay.transitions import transition
from tests import factories

pytestmark = pytest.mark.integration

WRITERS = ("smartpay_disburse", "smartpay_webhook", "smartpay_reconcile")
REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.IntegrityConstraintViolation,
           psycopg.errors.RaiseException)


def test_the_database_lifecycle_is_generated_from_lifecycle_py(pg: psycopg.Connection[Any]) -> None:
    rows = pg.execute("SELECT from_status, to_status, outcome, review_reason FROM voucher_lifecycle").fetchall()
    assert sorted(tuple(r.values()) for r in rows) == sorted(lifecycle.decision_table())
    check = pg.execute("SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint "
                       "WHERE conname = 'vouchers_status_check'").fetchone()["d"]
    assert all(f"'{s.value}'" in check for s in VoucherStatus)
    assert pg.execute("SELECT smartpay_ineligible_target('suspended') AS h, smartpay_ineligible_target('deceased') "
                      "AS c").fetchone() == {"h": "held", "c": "cancelled"}
    # and migrate re-renders it whenever lifecycle.py changes (the checksum is of the rendered SQL)
    recorded = pg.execute("SELECT checksum FROM schema_repeatables WHERE name = 'generated:lifecycle'").fetchone()
    assert recorded == {"checksum": migrate.generated()[0].checksum}


def test_migrate_re_renders_the_lifecycle_when_lifecycle_py_changes(pg_url, monkeypatch) -> None:
    assert migrate.apply(pg_url)["generated"] == []  # unchanged: not re-run
    rendered = migrate.generated()
    edited = [migrate.Migration(m.version, m.name, m.sql + "\n-- lifecycle.py changed\n") for m in rendered]
    monkeypatch.setattr(migrate, "generated", lambda: edited)
    assert migrate.apply(pg_url)["generated"] == ["generated:lifecycle", "generated:transitions"]
    assert migrate.apply(pg_url)["generated"] == []
    monkeypatch.setattr(migrate, "generated", lambda: rendered)
    assert migrate.apply(pg_url)["generated"] == ["generated:lifecycle", "generated:transitions"]


def test_the_transition_functions_hold_the_lifecycle_and_are_re_rendered_with_it(
        pg: psycopg.Connection[Any], pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """transitions.py's statement, as two PL/pgSQL functions (plans kept per session by the server),
    with the lifecycle's decisions written in: a changed lifecycle.py re-renders them on migrate."""
    functions = pg.execute(
        "SELECT p.proname, l.lanname, p.prosecdef, p.proconfig FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "WHERE p.proname LIKE 'smartpay_transition_many%' ORDER BY p.proname").fetchall()
    assert functions == [{"proname": name, "lanname": "plpgsql", "prosecdef": False,
                          "proconfig": ["search_path=pg_catalog, public, pg_temp"]}
                         for name in ("smartpay_transition_many", "smartpay_transition_many_paying")]
    voucher = factories.voucher(pg, factories.beneficiary(pg)["id"], status="expired")["id"]
    table = lifecycle.decision_table()
    edited = [(a, b, outcome, "re-rendered from lifecycle.py" if (a, b) == ("expired", "redeemed") else review)
              for a, b, outcome, review in table]
    assert edited != table
    monkeypatch.setattr(lifecycle, "decision_table", lambda: edited)
    try:
        assert migrate.apply(pg_url)["generated"] == ["generated:lifecycle", "generated:transitions"]
        with psycopg.connect(pg_url) as conn:  # commits on leaving
            result = transition(conn, voucher, "redeemed", source="operator", reference="re-render")
        assert (result.outcome, result.review_reason) == ("applied", "re-rendered from lifecycle.py")
    finally:
        monkeypatch.undo()
        assert migrate.apply(pg_url)["generated"] == ["generated:lifecycle", "generated:transitions"]
    assert pg.execute("SELECT review_reason FROM vouchers WHERE id = %s", (voucher,)).fetchone() == {
        "review_reason": "re-rendered from lifecycle.py"}


def test_the_trigger_allows_exactly_the_lifecycles_transitions_on_every_pair(pg: psycopg.Connection[Any]) -> None:
    b = factories.beneficiary(pg)
    disagreements = []
    for current in VoucherStatus:
        for target in VoucherStatus:
            if current == target:
                continue
            v = factories.voucher(pg, b["id"], cycle=f"20{10 + list(VoucherStatus).index(current)}-"
                                                     f"{list(VoucherStatus).index(target) + 1:02d}", status=current,
                                  claimable=target == VoucherStatus.PENDING)  # a claim needs a run (0014)
            try:
                with pg.transaction():
                    pg.execute("UPDATE vouchers SET status = %s WHERE id = %s", (target, v["id"]))
                allowed = True
            except psycopg.errors.IntegrityConstraintViolation:
                allowed = False
            if allowed != decide(current, target).applies:
                disagreements.append((current.value, target.value, allowed))
    assert disagreements == []


@pytest.fixture()
def voucher(pg: psycopg.Connection[Any]) -> dict[str, str]:
    b = factories.beneficiary(pg)
    return {"vid": factories.voucher(pg, b["id"], status="active")["id"], "bid": b["id"]}


def _refused(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> type[Exception]:
    with pytest.raises(REFUSED) as caught:
        conn.execute(statement, params)
    conn.rollback()
    return type(caught.value)


@pytest.mark.parametrize("role", WRITERS)
def test_function_roles_cannot_move_a_voucher_backwards_or_change_its_terms(connect_as, pg, voucher, role) -> None:
    conn = connect_as(role)
    assert _refused(conn, "UPDATE vouchers SET status = 'issued' WHERE id = %(vid)s", voucher) is \
        psycopg.errors.IntegrityConstraintViolation  # the role may write status: the trigger refuses
    assert _refused(conn, "UPDATE vouchers SET status = 'pending', version = version + 1 WHERE id = %(vid)s",
                    voucher) is psycopg.errors.IntegrityConstraintViolation
    for statement in ("UPDATE vouchers SET amount_cents = 1 WHERE id = %(vid)s",
                      "UPDATE vouchers SET currency = 'USD' WHERE id = %(vid)s",
                      "UPDATE vouchers SET programme = 'disability' WHERE id = %(vid)s",
                      "UPDATE vouchers SET cycle = '2026-12' WHERE id = %(vid)s",
                      "UPDATE vouchers SET beneficiary_id = %(bid)s WHERE id = %(vid)s"):
        _refused(conn, statement, voucher)
    assert pg.execute("SELECT status, amount_cents, version FROM vouchers WHERE id = %(vid)s", voucher).fetchone() == {
        "status": "active", "amount_cents": 140000, "version": 1}


def test_even_the_owner_cannot_change_a_vouchers_terms_or_move_it_backwards(pg, voucher) -> None:
    for statement in ("UPDATE vouchers SET amount_cents = 1 WHERE id = %(vid)s",
                      "UPDATE vouchers SET currency = 'NAD', cycle = '2020-01' WHERE id = %(vid)s",
                      "UPDATE vouchers SET status = 'pending' WHERE id = %(vid)s",
                      "UPDATE vouchers SET id = gen_random_uuid() WHERE id = %(vid)s"):
        with pytest.raises((psycopg.errors.IntegrityConstraintViolation, psycopg.errors.ForeignKeyViolation)), \
                pg.transaction():
            pg.execute(statement, voucher)


@pytest.mark.parametrize("role", (*WRITERS, "owner"))
@pytest.mark.parametrize("status", ["active", "pending", "held", "redeemed"])
def test_no_role_inserts_a_voucher_in_any_status_but_issued(connect_as, pg, voucher, role, status) -> None:
    conn = pg if role == "owner" else connect_as(role)
    statement = ("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at, status) "
                 "VALUES (%(bid)s, 'old_age', '2027-01', 140000, now() + interval '30 days', %(status)s)")
    with pytest.raises(REFUSED), conn.transaction():
        conn.execute(statement, {**voucher, "status": status})
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE cycle = '2027-01'") == 0


def test_not_even_the_owner_issues_to_an_ineligible_beneficiary(pg) -> None:
    for b, programme in ((factories.beneficiary(pg, status="suspended"), "old_age"),
                         (factories.beneficiary(pg, status="deceased"), "old_age"),
                         (factories.beneficiary(pg, programme="child_grant"), "old_age")):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="not issued"), pg.transaction():
            pg.execute("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
                       "VALUES (%s, %s, '2027-01', 1000, now() + interval '30 days')", (b["id"], programme))
    assert factories.count(pg, "SELECT count(*) FROM vouchers") == 0


def test_not_even_the_owner_issues_above_the_programmes_maximum(pg) -> None:
    b = factories.beneficiary(pg)
    maximum = pg.execute("SELECT max_amount_cents FROM programmes WHERE code = 'old_age'").fetchone()["max_amount_cents"]
    with pytest.raises(psycopg.errors.CheckViolation, match="above the old_age maximum"), pg.transaction():
        pg.execute("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
                   "VALUES (%s, 'old_age', '2027-01', %s, now() + interval '30 days')", (b["id"], maximum + 1))
    pg.execute("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
               "VALUES (%s, 'old_age', '2027-01', %s, now() + interval '30 days')", (b["id"], maximum))
    assert factories.count(pg, "SELECT count(*) FROM vouchers") == 1


def test_nothing_is_marked_pending_for_an_ineligible_beneficiary(pg) -> None:
    """The backstop for a registry change racing a claim: refused as a serialisation failure."""
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], claimable=True)["id"]
    with pg.transaction():
        pg.execute("SET LOCAL session_replication_role = replica")  # the registry trigger missed it
        pg.execute("UPDATE beneficiaries SET status = 'suspended' WHERE id = %s", (b["id"],))
    with pytest.raises(psycopg.errors.SerializationFailure, match="beneficiary is suspended"), pg.transaction():
        pg.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (v,))
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v,)).fetchone() == {"status": "issued"}


@pytest.mark.parametrize("role", (*WRITERS, "smartpay_beneficiaries", "buffr_readonly", "auditor"))
def test_the_audit_trail_is_append_only_for_every_function_role(connect_as, pg, voucher, role) -> None:
    conn = connect_as(role)
    conn.execute("SET default_transaction_read_only = off")
    conn.commit()
    before = factories.count(pg, "SELECT count(*) FROM voucher_events")
    for statement in ("UPDATE voucher_events SET to_status = 'redeemed'", "DELETE FROM voucher_events",
                      "TRUNCATE voucher_events", "TRUNCATE vouchers CASCADE"):
        _refused(conn, statement, {})
    assert factories.count(pg, "SELECT count(*) FROM voucher_events") == before


def test_truncate_is_refused_by_the_trigger_even_where_granted(pg, voucher, scratch) -> None:
    """Grants are one wall; the trigger is the second: a role handed TRUNCATE still cannot."""
    from smartpay_tools.local.services import url_as

    intruder = scratch.role("smartpay_test_truncate")
    pg.execute(f'GRANT TRUNCATE, UPDATE, DELETE ON voucher_events TO "{intruder}"')
    pg.execute(f'GRANT CONNECT ON DATABASE "{pg.info.dbname}" TO "{intruder}"')
    pg.execute(f'GRANT USAGE ON SCHEMA public TO "{intruder}"')
    try:
        with psycopg.connect(url_as(pg.info.dsn, intruder)) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute("TRUNCATE voucher_events")
            conn.rollback()
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute("DELETE FROM voucher_events")
    finally:
        pg.execute(f'REVOKE ALL ON voucher_events FROM "{intruder}"')
        pg.execute(f'REVOKE ALL ON DATABASE "{pg.info.dbname}" FROM "{intruder}"')
        pg.execute(f'REVOKE ALL ON SCHEMA public FROM "{intruder}"')
    assert factories.count(pg, "SELECT count(*) FROM voucher_events") > 0


# --- a function runs only as its own role ---------------------------------------------------------

def test_a_function_connected_as_another_role_answers_503_and_says_why(db_env, pg, monkeypatch) -> None:
    from beneficiaries.handler import lambda_handler
    from smartpay import db
    from smartpay.observability import logger
    from smartpay_tools.local.events import api_event, buffr_authorizer
    from smartpay_tools.local.lambda_runtime import FakeLambdaContext
    from smartpay_tools.local.services import url_as

    b = factories.beneficiary(pg)
    event = api_event("GET", f"/api/v1/beneficiaries/{b['id']}", resource="/api/v1/beneficiaries/{beneficiary_id}",
                      path_parameters={"beneficiary_id": b["id"]}, authorizer=buffr_authorizer())
    context = FakeLambdaContext("smartpay-beneficiaries-local", 256, "req-1", 10**13)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        # A mis-wired secret: the beneficiaries function logs in as the webhook role.
        monkeypatch.setenv("DB_ROLE", "smartpay_beneficiaries")
        monkeypatch.setenv("DATABASE_URL", url_as(db_env, "smartpay_webhook"))
        db.close_pool()
        wrong = lambda_handler(event, context)
        assert wrong["statusCode"] == 503 and "Retry-After" in (wrong.get("headers") or {}) | (
            {k: v[0] for k, v in (wrong.get("multiValueHeaders") or {}).items()})
        assert "smartpay_beneficiaries" in json.loads(wrong["body"])["detail"]
        line = next(json.loads(x) for x in stream.getvalue().splitlines() if "role mismatch" in x)
        assert (line["level"], line["db_role_expected"], line["db_role_connected"]) == (
            "ERROR", "smartpay_beneficiaries", "smartpay_webhook")
        # Wired right, the same request is served.
        monkeypatch.setenv("DATABASE_URL", url_as(db_env, "smartpay_beneficiaries"))
        db.close_pool()
        assert lambda_handler(event, context)["statusCode"] == 200
    finally:
        logger.removeHandler(handler)
        db.close_pool()


def test_every_database_function_declares_its_db_role_for_the_local_runner(local_stack) -> None:
    for logical_id, spec in local_stack.functions.items():
        env = local_stack.env_for(spec)
        if "DATABASE_URL" in env and logical_id != "MigrateFunction":
            assert env.get("DB_ROLE"), logical_id
            assert f"user={env['DB_ROLE']}" in env["DATABASE_URL"] or f"{env['DB_ROLE']}@" in env["DATABASE_URL"]
