"""The database access matrix on the real PostgreSQL: each role can do what it needs and no more.

``EXPECTED`` is the matrix of docs/database.md: the first test compares it with
the server's catalogue for every relation in the schema (so a new table must be decided on
here), the others run real statements as each role, including the project's own writer code.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from smartpay import access, masking
from smartpay.transitions import audit_as, transition
from tests import factories

pytestmark = pytest.mark.integration

ALL = "*"  # the privilege on the whole table, not only some columns
STATUS_COLUMNS = frozenset({"status", "status_changed_at", "version", "buffr_delivery_id", "failure_reason",
                            "review_reason"})
ISSUE_COLUMNS = frozenset({"beneficiary_id", "programme", "cycle", "amount_cents", "currency", "expires_at"})
NON_PII = frozenset({"id", "region", "programme", "status", "created_at", "updated_at"})
PII = ("id_number", "first_name", "last_name", "msisdn")

EXPECTED: dict[str, dict[str, dict[str, Any]]] = {
    "smartpay_beneficiaries": {
        "beneficiaries": {"SELECT": ALL},
        "vouchers": {"SELECT": ALL},
    },
    "smartpay_disburse": {
        "programmes": {"SELECT": ALL},
        "beneficiaries": {"SELECT": NON_PII | {"id_number"}},
        "vouchers": {"SELECT": ALL, "INSERT": ISSUE_COLUMNS, "UPDATE": STATUS_COLUMNS},
        "voucher_events": {"SELECT": ALL},
        "cycle_runs": {"SELECT": ALL, "INSERT": ALL, "UPDATE": frozenset({
            "status", "checker_principal", "checker_key_id", "canceller_principal", "canceller_key_id",
            "approved_at", "finished_at", "updated_at"})},
        "cycle_run_events": {"SELECT": ALL, "INSERT": ALL},
        "cycle_run_items": {"SELECT": ALL, "INSERT": ALL},
        "cycle_run_chunks": {"SELECT": ALL, "INSERT": ALL, "UPDATE": frozenset({
            "state", "token", "message_id", "sends", "receives", "attempts", "retries", "errors", "enqueued_at",
            "done_at", "updated_at"})},
        "cycle_run_events_id_seq": {"USAGE": ALL},
        "smartpay_leases": {"SELECT": ALL, "INSERT": ALL, "UPDATE": ALL, "DELETE": ALL},
    },
    "smartpay_webhook": {
        "vouchers": {"SELECT": ALL, "UPDATE": STATUS_COLUMNS},
        "voucher_events": {"SELECT": ALL},
        "webhook_events": {"SELECT": ALL, "INSERT": ALL},
        "webhook_events_id_seq": {"USAGE": ALL},
    },
    "smartpay_reconcile": {
        "programmes": {"SELECT": ALL},
        "beneficiaries": {"SELECT": NON_PII},
        "vouchers": {"SELECT": ALL, "UPDATE": STATUS_COLUMNS},
        "voucher_events": {"SELECT": ALL},
        "reconciliation_runs": {"SELECT": ALL, "INSERT": ALL, "UPDATE": ALL},
        "reconciliation_records": {"SELECT": ALL, "INSERT": ALL, "UPDATE": ALL},
        "reconciliation_report": {"SELECT": ALL},
        "beneficiary_eligibility": {"SELECT": ALL},
        "webhook_receipts": {"SELECT": ALL},
        "reconciliation_records_id_seq": {"USAGE": ALL},
        "cycle_runs": {"SELECT": ALL},
        "cycle_run_items": {"SELECT": ALL},
        "cycle_run_chunks": {"SELECT": ALL},
        "smartpay_leases": {"SELECT": ALL, "INSERT": ALL, "UPDATE": ALL, "DELETE": ALL},
    },
    "buffr_readonly": {
        "vouchers": {"SELECT": ALL},
        "beneficiaries_masked": {"SELECT": ALL},
    },
    "auditor": {
        name: {"SELECT": ALL}
        for name in ("programmes", "vouchers", "voucher_events", "webhook_events", "reconciliation_runs",
                     "reconciliation_records", "reconciliation_report", "beneficiaries_masked", "voucher_lifecycle",
                     "beneficiary_eligibility", "webhook_receipts", "cycle_runs", "cycle_run_events",
                     "cycle_run_items", "cycle_run_chunks")
    },
}
#: Every relation in the schema must be listed here: a new table is a decision about who sees it.
RELATIONS = frozenset({
    "programmes", "beneficiaries", "vouchers", "voucher_events", "webhook_events", "reconciliation_runs",
    "reconciliation_records", "beneficiaries_masked", "reconciliation_report", "schema_migrations",
    "schema_repeatables", "voucher_lifecycle", "voucher_events_id_seq", "webhook_events_id_seq",
    "reconciliation_records_id_seq", "beneficiary_eligibility", "webhook_receipts", "cycle_runs", "cycle_run_events",
    "cycle_run_items", "cycle_run_chunks", "cycle_run_events_id_seq", "smartpay_leases",
})
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")


def _actual(conn: psycopg.Connection[Any], role: str) -> dict[str, dict[str, Any]]:
    """What ``role`` may do per relation, read from the catalogue (table-wide or per column)."""
    found: dict[str, dict[str, Any]] = {}
    relations = conn.execute(
        """SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p', 'S', 'f')""").fetchall()
    for rel in relations:
        name, kind = rel["relname"], rel["relkind"]
        if kind == "S":
            for privilege in SEQUENCE_PRIVILEGES:
                if conn.execute("SELECT has_sequence_privilege(%s, %s, %s) AS ok",
                                (role, name, privilege)).fetchone()["ok"]:
                    found.setdefault(name, {})[privilege] = ALL
            continue
        for privilege in TABLE_PRIVILEGES:
            if conn.execute("SELECT has_table_privilege(%s, %s, %s) AS ok", (role, name, privilege)).fetchone()["ok"]:
                found.setdefault(name, {})[privilege] = ALL
            elif privilege in {"SELECT", "INSERT", "UPDATE", "REFERENCES"}:
                columns = {r["attname"] for r in conn.execute(
                    """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
                          AND NOT attisdropped AND has_column_privilege(%s, attrelid, attnum, %s)""",
                    (name, role, privilege))}
                if columns:
                    found.setdefault(name, {})[privilege] = frozenset(columns)
    return found


def test_every_relation_is_in_the_matrix(pg: psycopg.Connection[Any]) -> None:
    names = {r["relname"] for r in pg.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p', 'S', 'f')""")}
    assert names - RELATIONS == set(), (
        "new relations: decide who may use them in R__grants.sql and EXPECTED here (docs/database.md)")


@pytest.mark.parametrize("role", sorted(access.ROLE_NAMES))
def test_catalogue_grants_are_exactly_the_matrix(pg: psycopg.Connection[Any], role: str) -> None:
    assert _actual(pg, role) == EXPECTED[role]
    database = pg.execute("""SELECT has_database_privilege(%(r)s, current_database(), 'CONNECT') AS connect,
                                    has_database_privilege(%(r)s, current_database(), 'TEMP') AS temp,
                                    has_schema_privilege(%(r)s, 'public', 'CREATE') AS create_in_public,
                                    has_schema_privilege(%(r)s, 'public', 'USAGE') AS usage""",
                          {"r": role}).fetchone()
    assert database == {"connect": True, "temp": False, "create_in_public": False, "usage": True}
    attrs = pg.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin FROM pg_roles "
                       "WHERE rolname = %s", (role,)).fetchone()
    assert attrs == {"rolsuper": False, "rolcreaterole": False, "rolcreatedb": False, "rolbypassrls": False,
                     "rolcanlogin": True}


def test_public_may_not_connect(pg: psycopg.Connection[Any], scratch: Any) -> None:
    stranger = scratch.role("smartpay_test_stranger")
    assert pg.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT') AS ok",
                      (stranger,)).fetchone()["ok"] is False


# --- real statements as each role ----------------------------------------------------------

@pytest.fixture()
def world(pg: psycopg.Connection[Any]) -> dict[str, str]:
    """One beneficiary, an issued voucher, a webhook event and a reconciliation run."""
    b = factories.beneficiary(pg, first_name="Tuyeni", last_name="Haufiku", msisdn="+264811234567")
    v = factories.voucher(pg, b["id"])
    run = pg.execute("INSERT INTO reconciliation_runs (mode) VALUES ('full') RETURNING id").fetchone()["id"]
    pg.execute("INSERT INTO webhook_events (webhook_id, payload, outcome) VALUES ('msg_1', '{}', 'ignored')")
    return {"bid": b["id"], "vid": v["id"], "run": str(run), "id_number": b["id_number"]}


REFUSED = psycopg.errors.InsufficientPrivilege
NEW_VOUCHER = ("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
               "VALUES (%(bid)s, 'old_age', '2026-12', 140000, now() + interval '30 days')")
#: The transition functions (generated by migrate from smartpay/transitions.py), called directly.
CALL = ("SELECT * FROM {}(jsonb_build_array(jsonb_build_object('n', 0, 'id', %(vid)s::text, 'to_status', '{}')), "
        "ARRAY[%(vid)s]::uuid[], '{}', 'ref')")
WRITERS = {"smartpay_disburse": "disburse", "smartpay_webhook": "webhook", "smartpay_reconcile": "reconcile"}
PAYING_FN = CALL.format("smartpay_transition_many_paying", "pending", "webhook")
CASES: list[tuple[str, str, bool]] = [
    # The transition functions: the writers only (as their own audit source), the paying one for
    # the disburse function only.
    *((role, CALL.format("smartpay_transition_many", "cancelled", WRITERS.get(role, "operator")), role in WRITERS)
      for role in sorted(access.ROLE_NAMES)),
    *((role, CALL.format("smartpay_transition_many_paying", "pending", WRITERS.get(role, "operator")),
       role == "smartpay_disburse") for role in sorted(access.ROLE_NAMES)),
    # beneficiaries function: reads the registry incl. PII and the vouchers; writes nothing.
    ("smartpay_beneficiaries", "SELECT id_number, first_name, last_name, msisdn FROM beneficiaries", True),
    ("smartpay_beneficiaries", "SELECT id, status FROM vouchers WHERE beneficiary_id = %(bid)s", True),
    ("smartpay_beneficiaries", "UPDATE vouchers SET status = 'cancelled' WHERE id = %(vid)s", False),
    ("smartpay_beneficiaries", "UPDATE beneficiaries SET status = 'suspended'", False),
    ("smartpay_beneficiaries", NEW_VOUCHER, False),
    ("smartpay_beneficiaries", "SELECT * FROM voucher_events", False),
    ("smartpay_beneficiaries", "SELECT * FROM webhook_events", False),
    ("smartpay_beneficiaries", "SELECT * FROM programmes", False),
    # disburse: ID number yes, names and phone no; issues vouchers; only status columns change.
    ("smartpay_disburse", "SELECT id, id_number, programme, status FROM beneficiaries WHERE id = %(bid)s", True),
    ("smartpay_disburse", "SELECT id, status FROM beneficiaries WHERE id = %(bid)s FOR SHARE", False),
    ("smartpay_disburse", NEW_VOUCHER.replace("expires_at)", "expires_at, status)").replace("days')", "days', 'active')"),
     False),
    ("smartpay_disburse", "SELECT msisdn FROM beneficiaries", False),
    ("smartpay_disburse", "SELECT first_name FROM beneficiaries", False),
    ("smartpay_disburse", "SELECT * FROM beneficiaries", False),
    ("smartpay_disburse", "SELECT max_amount_cents FROM programmes", True),
    ("smartpay_disburse", NEW_VOUCHER, True),
    ("smartpay_disburse", "UPDATE vouchers SET amount_cents = 1 WHERE id = %(vid)s", False),
    ("smartpay_disburse", "UPDATE vouchers SET beneficiary_id = %(bid)s WHERE id = %(vid)s", False),
    ("smartpay_disburse", "DELETE FROM vouchers WHERE id = %(vid)s", False),
    ("smartpay_disburse", "UPDATE beneficiaries SET region = 'Khomas'", False),
    ("smartpay_disburse", "UPDATE beneficiaries SET status = 'suspended'", False),
    ("smartpay_disburse", "SELECT * FROM webhook_events", False),
    ("smartpay_disburse", "SELECT * FROM reconciliation_runs", False),
    # webhook: no beneficiaries at all; its own log; only status columns of vouchers.
    ("smartpay_webhook", "INSERT INTO webhook_events (webhook_id, payload, outcome) VALUES ('m', '{}', 'applied')",
     True),
    ("smartpay_webhook", "SELECT outcome FROM webhook_events WHERE webhook_id = 'msg_1'", True),
    ("smartpay_webhook", "UPDATE webhook_events SET outcome = 'applied'", False),
    ("smartpay_webhook", "DELETE FROM webhook_events", False),
    ("smartpay_webhook", "SELECT id_number FROM beneficiaries", False),
    ("smartpay_webhook", "SELECT id FROM beneficiaries", False),
    ("smartpay_webhook", "SELECT id FROM vouchers WHERE id = %(vid)s FOR UPDATE", True),
    ("smartpay_beneficiaries", "SELECT id FROM vouchers WHERE id = %(vid)s FOR UPDATE", False),
    ("smartpay_webhook", "SELECT id_number FROM beneficiaries_masked", False),
    ("smartpay_webhook", "SELECT b.msisdn FROM vouchers v JOIN beneficiaries b ON b.id = v.beneficiary_id", False),
    ("smartpay_webhook", NEW_VOUCHER, False),
    ("smartpay_webhook", "UPDATE vouchers SET amount_cents = 1 WHERE id = %(vid)s", False),
    ("smartpay_webhook", "SELECT * FROM reconciliation_records", False),
    # reconcile: its own tables, non-PII registry columns, status columns of vouchers.
    ("smartpay_reconcile", "SELECT id, region, programme, status FROM beneficiaries", True),
    ("smartpay_reconcile", "SELECT id_number FROM beneficiaries", False),
    ("smartpay_reconcile", "SELECT msisdn FROM beneficiaries", False),
    ("smartpay_reconcile", "SELECT last_name FROM beneficiaries", False),
    ("smartpay_reconcile", "INSERT INTO reconciliation_records (run_id, voucher_id, ketchup_status, match, action) "
                           "VALUES (%(run)s, %(vid)s, 'issued', true, 'none')", True),
    ("smartpay_reconcile", "UPDATE reconciliation_runs SET checked = 1, status = 'completed' WHERE id = %(run)s",
     True),
    ("smartpay_reconcile", "SELECT * FROM reconciliation_report", True),
    ("smartpay_reconcile", "DELETE FROM reconciliation_runs", False),
    ("smartpay_reconcile", NEW_VOUCHER, False),
    ("smartpay_reconcile", "UPDATE vouchers SET amount_cents = 1 WHERE id = %(vid)s", False),
    ("smartpay_reconcile", "SELECT * FROM webhook_events", False),
    # Buffr: vouchers and the masked view, read-only; nothing else.
    ("buffr_readonly", "SELECT id, amount_cents, status FROM vouchers", True),
    ("buffr_readonly", "SELECT id_number, msisdn, first_name FROM beneficiaries_masked", True),
    ("buffr_readonly", "SELECT id_number FROM beneficiaries", False),
    ("buffr_readonly", "SELECT id FROM beneficiaries", False),
    ("buffr_readonly", "UPDATE vouchers SET status = 'redeemed' WHERE id = %(vid)s", False),
    ("buffr_readonly", "SELECT * FROM voucher_events", False),
    ("buffr_readonly", "SELECT * FROM webhook_events", False),
    ("buffr_readonly", "SELECT * FROM reconciliation_records", False),
    ("buffr_readonly", "SELECT * FROM programmes", False),
    ("buffr_readonly", "SELECT * FROM schema_migrations", False),
    # Auditors: the trail, webhook log, reconciliation and reports; no PII, no writes.
    ("auditor", "SELECT * FROM voucher_events", True),
    ("auditor", "SELECT * FROM webhook_events", True),
    ("auditor", "SELECT * FROM reconciliation_runs", True),
    ("auditor", "SELECT * FROM reconciliation_records", True),
    ("auditor", "SELECT * FROM reconciliation_report", True),
    ("auditor", "SELECT * FROM beneficiaries_masked", True),
    ("auditor", "SELECT id_number FROM beneficiaries", False),
    ("auditor", "INSERT INTO voucher_events (voucher_id, to_status, source) VALUES (%(vid)s, 'issued', 'operator')",
     False),
    ("auditor", "UPDATE reconciliation_runs SET status = 'failed'", False),
    ("auditor", "DELETE FROM webhook_events", False),
]


def _writable(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Switch off a role's default read-only mode (any session may), so privileges alone decide;
    name an audit source, so a voucher change is decided by privileges, not refused for lacking one."""
    conn.execute("SET default_transaction_read_only = off")
    conn.execute("SET smartpay.source = 'operator'")
    conn.commit()
    return conn


@pytest.mark.parametrize("role, statement, allowed", CASES,
                         ids=[f"{r}-{'ok' if ok else 'refused'}-{i}" for i, (r, _, ok) in enumerate(CASES)])
def test_role_statements(connect_as: Any, world: dict[str, str], role: str, statement: str,
                         allowed: bool) -> None:
    conn = _writable(connect_as(role))
    if allowed:
        conn.execute(statement, world)
    else:
        with pytest.raises(REFUSED):
            conn.execute(statement, world)
    conn.rollback()


@pytest.mark.parametrize("role", sorted(access.ROLE_NAMES))
def test_no_role_creates_objects_or_temp_tables(connect_as: Any, world: dict[str, str], role: str) -> None:
    conn = _writable(connect_as(role))
    for statement in ("CREATE TABLE public.sneaky (x int)", "CREATE TEMP TABLE sneaky (x int)",
                      "TRUNCATE vouchers"):
        with pytest.raises(REFUSED):
            conn.execute(statement)
        conn.rollback()


@pytest.mark.parametrize("role", ["smartpay_beneficiaries", "buffr_readonly", "auditor"])
def test_read_only_roles_default_to_read_only_transactions(connect_as: Any, world: dict[str, str],
                                                           role: str) -> None:
    conn = connect_as(role)
    assert conn.execute("SHOW default_transaction_read_only").fetchone()["default_transaction_read_only"] == "on"


@pytest.mark.parametrize("role, source, target", [("smartpay_disburse", "disburse", "pending"),
                                                  ("smartpay_webhook", "webhook", "active"),
                                                  ("smartpay_reconcile", "reconcile", "cancelled")])
def test_writers_change_status_with_the_shared_transition_code(connect_as: Any, pg: psycopg.Connection[Any],
                                                               world: dict[str, str], role: str,
                                                               source: str, target: str) -> None:
    factories.in_run(pg, [world["vid"]])  # a claim (to pending) is only for a run's voucher (migration 0014)
    conn = connect_as(role)
    with conn.transaction():
        result = transition(conn, world["vid"], target, source=source, reference="ref-1")
    assert result.applied
    voucher = pg.execute("SELECT status, version FROM vouchers WHERE id = %s", (world["vid"],)).fetchone()
    assert voucher == {"status": target, "version": 2}
    trail = pg.execute("SELECT from_status, to_status, source FROM voucher_events WHERE voucher_id = %s ORDER BY id",
                       (world["vid"],)).fetchall()
    assert trail == [{"from_status": None, "to_status": "issued", "source": "operator"},
                     {"from_status": "issued", "to_status": target, "source": source}]


@pytest.mark.parametrize("role", ["smartpay_webhook", "smartpay_reconcile"])
def test_only_the_disburse_role_can_send_a_voucher_for_payment(connect_as: Any, pg: psycopg.Connection[Any],
                                                              world: dict[str, str], role: str) -> None:
    """A move to pending is a payment and reads the registry's eligibility and share-locks the
    voucher's run, which the webhook role (no access to beneficiaries) and the reconcile role
    (runs read-only; it re-sends through the disburse function) cannot."""
    factories.in_run(pg, [world["vid"]])
    conn = connect_as(role)
    with pytest.raises(REFUSED), conn.transaction():
        transition(conn, world["vid"], "pending", source=role.removeprefix("smartpay_"), reference="ref-1")
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (world["vid"],)).fetchone() == {"status": "issued"}


def test_a_transition_function_runs_with_its_callers_privileges(connect_as: Any, pg: psycopg.Connection[Any],
                                                                 world: dict[str, str]) -> None:
    """SECURITY INVOKER: given EXECUTE on the paying function, the webhook role still may not read
    the registry through it (nor lock a run); the one it may call never names the registry."""
    factories.in_run(pg, [world["vid"]])
    conn = _writable(connect_as("smartpay_webhook"))
    signature = "smartpay_transition_many_paying(jsonb, uuid[], text, text)"
    pg.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO smartpay_webhook")
    try:
        with pytest.raises(REFUSED, match=r"permission denied for table (beneficiaries|cycle_run_items|cycle_runs)"):
            conn.execute(PAYING_FN, world)
        conn.rollback()
    finally:
        pg.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM smartpay_webhook")
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (world["vid"],)).fetchone() == {"status": "issued"}
    sources = {r["proname"]: r["prosrc"] for r in pg.execute(
        "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'smartpay_transition_many%'")}
    assert "beneficiaries" in sources["smartpay_transition_many_paying"]
    assert "beneficiaries" not in sources["smartpay_transition_many"]


def test_disburse_issues_a_voucher_with_its_audit_row(connect_as: Any, pg: psycopg.Connection[Any],
                                                      world: dict[str, str]) -> None:
    conn = connect_as("smartpay_disburse")
    with conn.transaction():
        audit_as(conn, source="disburse", reference="req-1")
        vid = conn.execute(NEW_VOUCHER + " RETURNING id", world).fetchone()["id"]
    trail = pg.execute("SELECT from_status, to_status, source, reference FROM voucher_events WHERE voucher_id = %s",
                       (vid,)).fetchall()
    assert trail == [{"from_status": None, "to_status": "issued", "source": "disburse", "reference": "req-1"}]


# --- the masked view -------------------------------------------------------------------------

@pytest.mark.parametrize("first, last, msisdn", [
    ("Tuyeni", "Haufiku", "+264811234567"),
    ("Anna Maria", "van  der Merwe", "+264812345678"),
    ("Ö", "N!ng'ombe", "+26481123456"),
])
def test_masked_view_follows_the_python_masking_rule(connect_as: Any, pg: psycopg.Connection[Any],
                                                     first: str, last: str, msisdn: str) -> None:
    b = factories.beneficiary(pg, first_name=first, last_name=last, msisdn=msisdn)
    row = connect_as("buffr_readonly").execute(
        "SELECT id_number, first_name, last_name, msisdn, region, status FROM beneficiaries_masked WHERE id = %s",
        (b["id"],)).fetchone()
    assert row == {"id_number": masking.mask_id_number(b["id_number"]), "first_name": masking.mask_name(first),
                   "last_name": masking.mask_name(last), "msisdn": masking.mask_msisdn(msisdn),
                   "region": b["region"], "status": "active"}
    assert row["id_number"] == "*******" + b["id_number"][-4:]


def test_masking_functions_match_python_on_edge_cases(pg: psycopg.Connection[Any]) -> None:
    for value in ("", "1", "1234", "12345", "85010112345"):
        assert pg.execute("SELECT smartpay_mask_digits(%s) AS m", (value,)).fetchone()["m"] == \
            masking.mask_id_number(value)
    for value in ("", "+264", "+2648", "0811234567", "+264811234567"):
        assert pg.execute("SELECT smartpay_mask_msisdn(%s) AS m", (value,)).fetchone()["m"] == \
            masking.mask_msisdn(value)
    for value in ("", "   ", "a", " Anna\tMaria  ", "José-Luis O'Neil"):
        assert pg.execute("SELECT smartpay_mask_name(%s) AS m", (value,)).fetchone()["m"] == \
            masking.mask_name(value)
    assert pg.execute("SELECT smartpay_mask_name(NULL) AS m").fetchone()["m"] is None


def test_auditor_report_sums_per_programme_cycle(connect_as: Any, pg: psycopg.Connection[Any],
                                                 world: dict[str, str]) -> None:
    pg.execute("""INSERT INTO reconciliation_records (run_id, voucher_id, ketchup_status, buffr_status,
                      ketchup_amount_cents, buffr_amount_cents, match, action)
                  VALUES (%(run)s, %(vid)s, 'issued', 'active', 140000, 140000, false, 'healed')""", world)
    rows = connect_as("auditor").execute(
        "SELECT programme, cycle, checked, matched, healed, flagged, ketchup_amount_cents FROM reconciliation_report "
        "WHERE run_id = %s", (world["run"],)).fetchall()
    assert rows == [{"programme": "old_age", "cycle": "2026-11", "checked": 1, "matched": 0, "healed": 1,
                     "flagged": 0, "ketchup_amount_cents": 140000}]


# --- the functions connect as their roles -----------------------------------------------------

def test_beneficiaries_function_connects_as_its_role(gateway_url: str, api_keys: dict[str, str],
                                                     pg: psycopg.Connection[Any], local_stack: Any) -> None:
    import httpx

    b = factories.beneficiary(pg)
    reply = httpx.post(f"{gateway_url}/api/v1/beneficiaries/verify", json={"id_number": b["id_number"]},
                       headers={"x-api-key": api_keys["buffr"]}, timeout=30)
    assert reply.status_code == 200, reply.text
    users = {r["usename"] for r in pg.execute(
        "SELECT usename FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
        ("beneficiaries",))}
    assert users == {"smartpay_beneficiaries"}
    specs = local_stack.functions
    assert "DATABASE_URL" not in local_stack.env_for(specs["AuthorizerFunction"])
    owner = local_stack.env_for(specs["MigrateFunction"])["DATABASE_URL"]
    assert owner == local_stack.postgres.url  # the schema owner: the stack's own user


def test_unknown_role_cannot_log_in(pg_url: str) -> None:
    from smartpay_tools.local.services import url_as

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url_as(pg_url, f"smartpay_nobody_{uuid.uuid4().hex[:6]}"))


# --- timeouts are the server's, per role (a client SET or startup option would pin behind RDS Proxy)

@pytest.mark.parametrize("role, timeout", [("smartpay_beneficiaries", "5s"), ("smartpay_disburse", "5s"),
                                           ("smartpay_webhook", "5s"), ("smartpay_reconcile", "30s")])
def test_each_function_role_logs_in_with_its_own_timeouts(connect_as: Any, role: str, timeout: str) -> None:
    conn = connect_as(role)
    assert conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"] == timeout
    assert conn.execute("SHOW lock_timeout").fetchone()["lock_timeout"] == timeout


def test_migrate_brings_an_existing_roles_settings_in_step(scratch: Any) -> None:
    from smartpay import access

    name = scratch.role("smartpay_test_fn", "LOGIN")  # created by an older release: no settings
    role = access.Role(name, "a function role", (("statement_timeout", "5s"), ("lock_timeout", "5s")))
    from tests.conftest import ADMIN_URL

    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        assert access.sync_settings(admin, [role]) == [name]
        assert access.sync_settings(admin, [role]) == []  # in step: nothing written again
        config = admin.execute("SELECT rolconfig FROM pg_roles WHERE rolname = %s", (name,)).fetchone()[0]
    assert sorted(config) == ["lock_timeout=5s", "statement_timeout=5s"]
