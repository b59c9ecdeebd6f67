"""The audit trail is the database's: no role changes a voucher or a cycle run without its audit row,
nor writes one by itself; SECURITY DEFINER functions and the eligibility guard cannot be fooled
by a temporary table (migration 0016)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from smartpay import audit_chain
from tests import factories

pytestmark = pytest.mark.integration

WRITERS = [("smartpay_disburse", "disburse"), ("smartpay_webhook", "webhook"), ("smartpay_reconcile", "reconcile")]
REFUSED = psycopg.errors.InsufficientPrivilege


def _trail(pg: psycopg.Connection[Any], voucher_id: str) -> list[tuple[Any, ...]]:
    return [(r["from_status"], r["to_status"], r["source"], r["reference"], r["detail"]) for r in pg.execute(
        "SELECT from_status, to_status, source, reference, detail FROM voucher_events WHERE voucher_id = %s "
        "ORDER BY id", (voucher_id,))]


def _as(connect_as: Any, role: str) -> psycopg.Connection[Any]:
    conn = connect_as(role)
    conn.execute("SET default_transaction_read_only = off")
    conn.commit()
    return conn


@pytest.mark.parametrize("role, source", WRITERS)
def test_a_role_cannot_write_an_audit_row_by_itself(connect_as: Any, pg: psycopg.Connection[Any],
                                                    role: str, source: str) -> None:
    v = factories.voucher(pg, factories.beneficiary(pg)["id"], status="pending")["id"]
    conn = _as(connect_as, role)
    with pytest.raises(REFUSED):
        conn.execute("INSERT INTO voucher_events (voucher_id, from_status, to_status, source) "
                     "VALUES (%s, 'pending', 'active', %s)", (v, source))
    conn.rollback()
    assert [t[1] for t in _trail(pg, v)] == ["issued", "pending"]


@pytest.mark.parametrize("role, source", WRITERS)
def test_a_role_cannot_change_a_voucher_without_an_audit_row(connect_as: Any, pg: psycopg.Connection[Any],
                                                             role: str, source: str) -> None:
    v = factories.voucher(pg, factories.beneficiary(pg)["id"], status="active")["id"]
    pg.execute("UPDATE vouchers SET review_reason = 'check it' WHERE id = %s", (v,))
    conn = _as(connect_as, role)
    # No source named for the transaction: refused, nothing changes.
    for change in ("status = 'redeemed'", "review_reason = NULL", "buffr_delivery_id = 'dlv_forged'"):
        with pytest.raises(REFUSED, match="without an audit source"):
            conn.execute(f"UPDATE vouchers SET {change} WHERE id = %s", (v,))
        conn.rollback()
    assert pg.execute("SELECT status, review_reason, buffr_delivery_id FROM vouchers WHERE id = %s", (v,)).fetchone() \
        == {"status": "active", "review_reason": "check it", "buffr_delivery_id": None}
    # With one: each change has its row, written by the database, with the source and reference set.
    with conn.transaction():
        conn.execute("SELECT set_config('smartpay.source', %s, true), set_config('smartpay.reference', 'ref-9', true)",
                     (source,))
        conn.execute("UPDATE vouchers SET review_reason = NULL WHERE id = %s", (v,))
        conn.execute("UPDATE vouchers SET buffr_delivery_id = 'dlv_x' WHERE id = %s", (v,))
        conn.execute("UPDATE vouchers SET status = 'redeemed' WHERE id = %s", (v,))
    assert _trail(pg, v)[-3:] == [("active", "active", source, "ref-9", None),
                                  ("active", "active", source, "ref-9", None),
                                  ("active", "redeemed", source, "ref-9", None)]
    assert audit_chain.verify(pg).ok


@pytest.mark.parametrize("role, foreign", [("smartpay_webhook", "reconcile"), ("smartpay_reconcile", "operator"),
                                           ("smartpay_disburse", "webhook")])
def test_a_role_names_only_its_own_source(connect_as: Any, pg: psycopg.Connection[Any], role: str,
                                          foreign: str) -> None:
    v = factories.voucher(pg, factories.beneficiary(pg)["id"], status="pending")["id"]
    conn = _as(connect_as, role)
    conn.execute("SELECT set_config('smartpay.source', %s, false)", (foreign,))
    with pytest.raises(REFUSED, match=f"the audit source {foreign} is not {role}'s"):
        conn.execute("UPDATE vouchers SET buffr_delivery_id = 'dlv_forged' WHERE id = %s", (v,))
    conn.rollback()
    assert [t[1] for t in _trail(pg, v)] == ["issued", "pending"]


def test_detail_is_per_voucher_and_used_once(pg: psycopg.Connection[Any]) -> None:
    v, w = (factories.voucher(pg, factories.beneficiary(pg)["id"], status="pending")["id"] for _ in range(2))
    with pg.transaction():
        pg.execute("SELECT set_config('smartpay.detail', %s, true)", (f'{{"{v}": {{"n": 1}}}}',))
        pg.execute("UPDATE vouchers SET status = 'active' WHERE id = ANY(%s::uuid[])", ([v, w],))
        pg.execute("UPDATE vouchers SET status = 'redeemed' WHERE id = %s", (v,))
    assert [t[4] for t in _trail(pg, v)[-2:]] == [{"n": 1}, None]
    assert _trail(pg, w)[-1][4] is None


def test_a_new_voucher_needs_a_source_too(connect_as: Any, pg: psycopg.Connection[Any]) -> None:
    b = factories.beneficiary(pg)
    conn = _as(connect_as, "smartpay_disburse")
    with pytest.raises(REFUSED, match="without an audit source"):
        conn.execute("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
                     "VALUES (%s, 'old_age', '2026-12', 1000, now() + interval '1 day')", (b["id"],))
    conn.rollback()
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE cycle = '2026-12'") == 0


def test_the_registry_review_reason_has_its_audit_row(pg: psycopg.Connection[Any]) -> None:
    b = factories.beneficiary(pg)
    sent = factories.voucher(pg, b["id"], status="active")["id"]
    held = factories.voucher(pg, b["id"], cycle="2026-12")["id"]
    pg.execute("UPDATE beneficiaries SET status = 'suspended' WHERE id = %s", (b["id"],))
    reason = "beneficiary is suspended after the voucher was sent to Buffr: check it with Buffr"
    assert _trail(pg, sent)[-1] == ("active", "active", "registry", f"beneficiary {b['id']}",
                                    {"review_reason": reason})
    assert _trail(pg, held)[-1] == ("issued", "held", "registry", f"beneficiary {b['id']}",
                                    {"reason": "beneficiary is suspended"})
    # the writer's own settings are back after the registry's trigger
    assert pg.execute("SELECT current_setting('smartpay.source') AS s").fetchone() == {"s": "operator"}
    assert audit_chain.verify(pg).ok


# --- cycle runs -------------------------------------------------------------------------------------

RUN = """INSERT INTO cycle_runs (programme, cycle, idempotency_key, fingerprint, voucher_count, total_amount_cents,
                                 chunk_size, maker_principal, maker_key_id, expires_at{extra_columns})
         VALUES ('old_age', '2026-11', %(key)s, repeat('a', 64), 1, 100, 10, 'operator', 'operator-local',
                 now() + interval '1 hour'{extra_values}) RETURNING id"""


def _run(conn: psycopg.Connection[Any], key: str = "k1", **extra: str) -> str:
    statement = RUN.format(extra_columns="".join(f", {c}" for c in extra),
                           extra_values="".join(f", {v}" for v in extra.values()))
    return str(conn.execute(statement, {"key": key}).fetchone()["id"])


def _run_events(pg: psycopg.Connection[Any], run_id: str) -> list[tuple[Any, ...]]:
    return [(r["action"], r["from_status"], r["to_status"], r["principal"], r["key_id"]) for r in pg.execute(
        "SELECT action, from_status, to_status, principal, key_id FROM cycle_run_events WHERE run_id = %s "
        "ORDER BY id", (run_id,))]


@pytest.mark.parametrize("extra", [
    {"status": "'running'", "checker_principal": "'someone'", "checker_key_id": "'k'", "approved_at": "now()"},
    {"status": "'approved'", "checker_principal": "'someone'", "checker_key_id": "'k'", "approved_at": "now()"},
    {"checker_principal": "'someone'", "checker_key_id": "'k'"},
    {"finished_at": "now()"},
])
def test_a_run_is_created_awaiting_approval_with_no_checker(connect_as: Any, pg: psycopg.Connection[Any],
                                                            extra: dict[str, str]) -> None:
    conn = _as(connect_as, "smartpay_disburse")
    conn.execute("SELECT set_config('smartpay.actor', 'operator', false)")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="created awaiting approval"):
        _run(conn, **extra)
    conn.rollback()
    assert factories.count(pg, "SELECT count(*) FROM cycle_runs") == 0


def test_checker_and_approval_never_change_once_set_and_moves_are_audited_by_the_database(
        connect_as: Any, pg: psycopg.Connection[Any]) -> None:
    conn = _as(connect_as, "smartpay_disburse")
    with conn.transaction():
        conn.execute("SELECT set_config('smartpay.actor', 'operator', true), "
                     "set_config('smartpay.actor_key', 'operator-local', true)")
        run = _run(conn)
    with pytest.raises(REFUSED, match="without an actor"):  # a move names who made it
        conn.execute("UPDATE cycle_runs SET status = 'approved', checker_principal = 'supervisor', "
                     "checker_key_id = 'supervisor-local', approved_at = now() WHERE id = %s", (run,))
    conn.rollback()
    with conn.transaction():
        conn.execute("SELECT set_config('smartpay.actor', 'supervisor', true), "
                     "set_config('smartpay.actor_key', 'supervisor-local', true)")
        conn.execute("UPDATE cycle_runs SET status = 'approved', checker_principal = 'supervisor', "
                     "checker_key_id = 'supervisor-local', approved_at = now() WHERE id = %s", (run,))
    for change in ("checker_principal = 'mallory'", "checker_key_id = 'mallory-key'",
                   "approved_at = now() - '1h'::interval"):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="never change"):
            conn.execute(f"UPDATE cycle_runs SET {change} WHERE id = %s", (run,))
        conn.rollback()
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="never change"):  # the owner neither
        pg.execute("UPDATE cycle_runs SET fingerprint = repeat('b', 64) WHERE id = %s", (run,))
    # an event with a status move is the database's alone
    with pytest.raises(REFUSED, match="audited by the database"):
        conn.execute("""INSERT INTO cycle_run_events (run_id, action, from_status, to_status, principal)
                        VALUES (%s, 'approved', 'awaiting_approval', 'approved', 'mallory')""", (run,))
    conn.rollback()
    row = pg.execute("SELECT status, checker_principal, checker_key_id FROM cycle_runs WHERE id = %s", (run,)).fetchone()
    assert row == {"status": "approved", "checker_principal": "supervisor", "checker_key_id": "supervisor-local"}
    assert _run_events(pg, run) == [
        ("prepared", None, "awaiting_approval", "operator", "operator-local"),
        ("approved", "awaiting_approval", "approved", "supervisor", "supervisor-local")]


# --- search paths and temporary tables ---------------------------------------------------------------

def test_every_security_definer_function_pins_its_search_path_temp_last(pg: psycopg.Connection[Any]) -> None:
    rows = pg.execute("""SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                          WHERE n.nspname = 'public' AND p.prosecdef ORDER BY 1""").fetchall()
    assert {r["proname"] for r in rows} >= {"vouchers_audit", "vouchers_guard_insert",
                                            "beneficiaries_eligibility_changed", "cycle_runs_audit"}
    for r in rows:
        assert r["proconfig"] == ["search_path=pg_catalog, public, pg_temp"], r["proname"]


@pytest.mark.parametrize("role", ["smartpay_disburse", "smartpay_webhook", "smartpay_reconcile"])
def test_public_holds_no_create_or_temp(pg: psycopg.Connection[Any], connect_as: Any, role: str) -> None:
    privileges = pg.execute("""
        SELECT (SELECT count(*) FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                 WHERE d.datname = current_database() AND a.grantee = 0 AND a.privilege_type = 'TEMPORARY') AS temp,
               (SELECT count(*) FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                 WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE') AS create_""").fetchone()
    assert privileges == {"temp": 0, "create_": 0}
    conn = _as(connect_as, role)
    with pytest.raises(REFUSED):
        conn.execute("CREATE TEMP TABLE beneficiaries (id uuid, status text, programme text)")
    conn.rollback()


def test_a_temporary_beneficiaries_table_does_not_fool_the_eligibility_guard(
        connect_as: Any, pg: psycopg.Connection[Any]) -> None:
    """Even where TEMP was granted back by hand, the guard reads the real registry (qualified names)."""
    b = factories.beneficiary(pg, status="suspended")
    pg.execute("ALTER TABLE vouchers DISABLE TRIGGER vouchers_guard_insert")  # an old voucher of a suspended person
    try:
        v = factories.voucher(pg, b["id"])["id"]
    finally:
        pg.execute("ALTER TABLE vouchers ENABLE TRIGGER vouchers_guard_insert")
    database = pg.execute("SELECT current_database() AS d").fetchone()["d"]
    pg.execute(f'GRANT TEMPORARY ON DATABASE "{database}" TO smartpay_disburse')
    try:
        conn = _as(connect_as, "smartpay_disburse")
        conn.execute("CREATE TEMP TABLE beneficiaries (id uuid, status text, programme text, id_number text)")
        conn.execute("INSERT INTO beneficiaries VALUES (%s, 'active', 'old_age', '00000000000')", (b["id"],))
        conn.execute("SELECT set_config('smartpay.source', 'disburse', false)")
        conn.commit()
        with pytest.raises(psycopg.errors.SerializationFailure, match="beneficiary is suspended"):
            conn.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (v,))
        conn.rollback()
    finally:
        pg.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM smartpay_disburse')
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v,)).fetchone() == {"status": "issued"}
