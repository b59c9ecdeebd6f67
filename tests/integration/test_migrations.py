"""Migrations: every table of docs/architecture.md#data-model with its constraints; safe to run twice."""

import psycopg
import pytest

from smartpay import migrate

pytestmark = pytest.mark.integration


def test_second_run_applies_nothing(pg_url: str) -> None:
    again = migrate.apply(pg_url)
    assert again["applied"] == [] and again["changed"] == []
    assert len(again["already"]) == len(migrate.available())
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in migrate.available()]


def test_tables_exist(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"beneficiaries", "vouchers", "voucher_events", "webhook_events", "reconciliation_runs",
            "reconciliation_records", "schema_migrations", "programmes"} <= tables


def _beneficiary(conn: psycopg.Connection, id_number: str = "85010112345") -> str:
    return str(conn.execute(
        """INSERT INTO beneficiaries (id_number, first_name, last_name, msisdn, region, programme)
           VALUES (%s, 'Anna', 'Angula', '+264811234567', 'Khomas', 'old_age') RETURNING id""",
        (id_number,)).fetchone()[0])


@pytest.mark.parametrize("sql, params", [
    ("UPDATE beneficiaries SET id_number = '123'", None),
    ("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
     "SELECT id, 'old_age', '2026-11', 0, now() + interval '30 days' FROM beneficiaries", None),
    ("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at, status) "
     "SELECT id, 'old_age', '2026-11', 100, now() + interval '30 days', 'paid' FROM beneficiaries", None),
    ("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at, currency) "
     "SELECT id, 'old_age', '2026-11', 100, now() + interval '30 days', 'USD' FROM beneficiaries", None),
    ("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
     "VALUES (gen_random_uuid(), 'old_age', '2026-11', 100, now() + interval '1 day')", None),
])
def test_constraints_refuse_bad_rows(clean_db: str, sql: str, params: object) -> None:
    with psycopg.connect(clean_db) as conn:
        _beneficiary(conn)
        conn.commit()
        with pytest.raises(psycopg.errors.IntegrityError):
            conn.execute(sql)


def test_unique_id_number_and_one_voucher_per_cycle(clean_db: str) -> None:
    with psycopg.connect(clean_db, options="-c smartpay.source=operator") as conn:
        bid = _beneficiary(conn)
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            _beneficiary(conn)
        conn.rollback()
        insert = ("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
                  "VALUES (%s, 'old_age', '2026-11', 140000, now() + interval '30 days')")
        conn.execute(insert, (bid,))
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (bid,))


def test_audit_trail_is_append_only(clean_db: str) -> None:
    with psycopg.connect(clean_db, options="-c smartpay.source=operator") as conn:
        bid = _beneficiary(conn)
        conn.execute("INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at) "
                     "VALUES (%s, 'old_age', '2026-11', 140000, now() + interval '30 days')", (bid,))
        conn.commit()  # with its 'issued' row, written by the database
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("UPDATE voucher_events SET to_status = 'redeemed'")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("DELETE FROM voucher_events")


def test_open_vouchers_partial_index(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        definition = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'vouchers_open_idx'").fetchone()[0]
    assert "WHERE" in definition and "pending" in definition
