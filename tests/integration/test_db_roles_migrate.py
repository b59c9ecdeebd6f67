"""Migrating the access matrix: repeatable grants, concurrency, and an owner that may not create roles."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from smartpay import access, migrate

pytestmark = pytest.mark.integration


def _privilege(url: str, role: str, table: str, privilege: str) -> bool:
    with psycopg.connect(url) as conn:
        return bool(conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)).fetchone()[0])


def test_concurrent_migrations_of_one_database_apply_once(scratch: Any) -> None:
    url = scratch.database()
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate.apply(url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(results) == 3
    assert sorted(len(r["applied"]) for r in results) == [0, 0, len(migrate.available())]
    assert sorted(len(r["reapplied"]) for r in results) == [0, 0, len(migrate.repeatables())]
    assert sorted(len(r["generated"]) for r in results) == [0, 0, len(migrate.generated())]
    assert _privilege(url, "smartpay_webhook", "webhook_events", "INSERT")


def test_repeatable_grants_reapply_when_changed_and_remove_stale_privileges(
        scratch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = scratch.database()
    migrate.apply(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("GRANT DELETE ON vouchers TO smartpay_webhook")  # drift a human added by hand
    assert migrate.apply(url)["reapplied"] == []  # unchanged file: not re-run
    assert _privilege(url, "smartpay_webhook", "vouchers", "DELETE")

    edited = [migrate.Migration(m.version, m.name, m.sql + "\n-- edited\n") for m in migrate.repeatables()]
    monkeypatch.setattr(migrate, "repeatables", lambda: edited)
    assert migrate.apply(url)["reapplied"] == ["R__grants"]
    assert not _privilege(url, "smartpay_webhook", "vouchers", "DELETE")
    assert _privilege(url, "smartpay_webhook", "vouchers", "SELECT")
    assert migrate.apply(url)["reapplied"] == []


def test_a_new_table_starts_with_no_access_and_regrants_follow_new_migrations(
        scratch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = scratch.database()
    migrate.apply(url)
    original = migrate.available()
    extra = migrate.Migration("0999", "new_table",
                              "DROP VIEW beneficiaries_masked; CREATE VIEW beneficiaries_masked AS "
                              "SELECT id, smartpay_mask_digits(id_number) AS id_number FROM beneficiaries; "
                              "CREATE TABLE payouts (id bigint PRIMARY KEY);")
    monkeypatch.setattr(migrate, "available", lambda: [*original, extra])
    result = migrate.apply(url)
    assert result["applied"] == ["0999_new_table"] and result["reapplied"] == ["R__grants"]
    # The re-created view got its grants back; the new table has none until R__grants.sql names it.
    assert _privilege(url, "buffr_readonly", "beneficiaries_masked", "SELECT")
    for role in access.ROLE_NAMES:
        assert not _privilege(url, role, "payouts", "SELECT")


def test_owner_without_createrole_gets_the_admin_sql_then_grants_after_it_is_run(
        scratch: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from smartpay_tools import cli
    from tests.conftest import ADMIN_URL

    owner = scratch.role("smartpay_test_owner", "LOGIN NOSUPERUSER NOCREATEROLE")
    url = scratch.database(owner=owner)
    missing = access.Role(scratch.name("smartpay_test_fn"), "a role nobody created yet",
                          (("statement_timeout", "5s"),))
    monkeypatch.setattr(access, "ROLES", (*access.ROLES, missing))

    # The CLI: schema applied, no grants, the SQL for the administrator on stdout, exit code 1.
    assert cli.main(["--database-url", url, "migrate"]) == cli.EXIT_FAILED
    out = capsys.readouterr()
    assert f'CREATE ROLE "{missing.name}" LOGIN' in out.out and "administrator must run" in out.err
    assert f'ALTER ROLE "{missing.name}" SET "statement_timeout" = \'5s\'' in out.out
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_repeatables WHERE name NOT LIKE 'generated:%'").fetchone()[0] == 0
        # the lifecycle and the transition functions (generated from Python) never wait for the administrator
        assert [r[0] for r in conn.execute("SELECT name FROM schema_repeatables WHERE name LIKE 'generated:%' "
                                           "ORDER BY name")] == ["generated:lifecycle", "generated:transitions"]
        # and no role may call a transition function before the grants are applied
        assert conn.execute("SELECT has_function_privilege('smartpay_webhook', 'smartpay_transition_many("
                            "jsonb, uuid[], text, text)', 'EXECUTE')").fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migrate.available())
    assert not _privilege(url, "smartpay_webhook", "vouchers", "SELECT")

    again = migrate.apply(url)  # still missing: still waiting, nothing half-granted
    assert again["roles_missing"] == [missing.name] and again["reapplied"] == []

    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(again["admin_sql"].encode())
    done = migrate.apply(url)
    assert "admin_sql" not in done and done["roles_created"] == [] and done["reapplied"] == ["R__grants"]
    assert _privilege(url, "smartpay_webhook", "vouchers", "SELECT")
    assert not _privilege(url, "smartpay_webhook", "beneficiaries", "SELECT")
    with psycopg.connect(ADMIN_URL) as admin:
        settings = admin.execute("SELECT rolconfig FROM pg_roles WHERE rolname = %s", (missing.name,)).fetchone()[0]
    assert settings == ["statement_timeout=5s"]


def test_superuser_creates_missing_roles_once(scratch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = scratch.database()
    missing = access.Role(scratch.name("smartpay_test_fn"), "created by the migration")
    monkeypatch.setattr(access, "ROLES", (*access.ROLES, missing))
    first = migrate.apply(url)
    assert first["roles_created"] == [missing.name] and "admin_sql" not in first
    second = scratch.database()
    assert migrate.apply(second)["roles_created"] == []  # cluster-wide: the next database finds it
