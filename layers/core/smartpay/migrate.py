"""Apply the numbered SQL migrations in order, once each, then the repeatable ones.

Safe to run twice and safe to run concurrently: an advisory lock serialises runners on a
database, each file is applied in its own transaction together with its row in
``schema_migrations``, and a numbered file whose statements changed after it was applied is
reported, not re-run. Whole-line ``--`` comments are documentation: the checksum leaves them out,
so a file's comments can be corrected without touching a database.

Repeatable migrations (``R__<name>.sql``, e.g. the access grants) describe a desired state
and are written to be re-run: one is applied again whenever its checksum differs from the
one recorded in ``schema_repeatables`` *or* a numbered migration was just applied (a new or
re-created table starts with no grants). They run after the roles of :mod:`smartpay.access`
exist; if the migrating role may not create them, the repeatables wait, and the result's
``admin_sql`` holds what an administrator must run before migrating again.

Generated migrations are repeatables rendered from Python rather than read from a file: the
voucher lifecycle (:func:`lifecycle_sql`) lives in :mod:`smartpay.lifecycle` only, and the
database's copy (the table the ``vouchers`` trigger checks, the status list, where an
ineligible voucher goes) is re-rendered from it whenever it changes; so is the transition
statement of :mod:`smartpay.transitions`, which the database holds as two PL/pgSQL functions
(:func:`smartpay.transitions.functions_sql`: the server keeps their plans per session, where the
pool may not prepare a statement) with the lifecycle's decisions written in. They run right
after the numbered migrations, before the roles and grants, so a database never waits for an
administrator to know its lifecycle (``R__grants.sql`` grants EXECUTE on the functions).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from smartpay import access, lifecycle, transitions

_LOCK_KEY = 0x5A7E_9A11  # arbitrary, constant: "smartpay migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REPEATABLE = re.compile(r"^R__([a-z0-9_]+)\.sql$")
#: Whole-file checksums databases recorded for these files before their comments were corrected
#: (the statements are the same); any other file's whole-file checksum is recognised as it is.
_RECORDED_WHOLE_FILE = {
    "0004": "d4b33163b41e78fb0b316a6fd770fbd31b792dc572849edfe4eab38785caefad",
    "0011": "c1d5afa673bfa97f551c89c31b2c36e79529a1ed8ce3ae07b59972cd9aed18be",
    "0012": "baf62a0af3a545ae2e1c8645f38f6e48e3dcb40c87c6a389a32d6efb9ef8dc15",
    "0013": "a8135057a110c7e00e7dafe9c6915b029c48f0eb95b8c89b810c4b0b78952ca5",
}


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file without its whole-line comments."""
        statements = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return hashlib.sha256(statements.encode()).hexdigest()

    def recorded_as(self, checksum: str) -> bool:
        """Whether ``checksum`` (from ``schema_migrations``) records these statements."""
        whole_file = {hashlib.sha256(self.sql.encode()).hexdigest(), _RECORDED_WHOLE_FILE.get(self.version)}
        return checksum == self.checksum or checksum in whole_file


def available() -> list[Migration]:
    found = []
    for entry in resources.files("smartpay.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(match.group(1), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def repeatables() -> list[Migration]:
    """``R__<name>.sql`` files, applied in name order after the numbered ones."""
    found = []
    for entry in resources.files("smartpay.migrations").iterdir():
        match = _REPEATABLE.match(entry.name)
        if match:
            found.append(Migration("R", match.group(1), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.name)


def lifecycle_sql() -> str:
    """The lifecycle as the database holds it, rendered from :mod:`smartpay.lifecycle`.

    ``voucher_lifecycle``: every (from, to) pair with :func:`lifecycle.decide`'s outcome; the
    ``vouchers_lifecycle`` trigger, whose WHEN condition allows exactly the ``applied`` pairs
    (and no change of a voucher's terms); the ``vouchers.status`` check;
    ``smartpay_ineligible_target`` (:data:`lifecycle.WHEN_INELIGIBLE`) and
    ``smartpay_before_buffr`` (:data:`lifecycle.BEFORE_BUFFR`), which the registry trigger uses.
    """
    def literal(value: str | None) -> str:
        return "NULL" if value is None else "'" + value.replace("'", "''") + "'"

    rows = ",\n    ".join("(" + ", ".join(map(literal, row)) + ")" for row in lifecycle.decision_table())
    statuses = ", ".join(literal(s.value) for s in lifecycle.VoucherStatus)
    before = ", ".join(literal(s.value) for s in sorted(lifecycle.BEFORE_BUFFR))
    allowed = ",\n              ".join(f"({literal(a)}, {literal(b)})" for a, b in lifecycle.allowed_pairs())
    terms = "id, beneficiary_id, programme, cycle, amount_cents, currency, issued_at"
    old_terms = ", ".join(f"OLD.{c}" for c in terms.split(", "))
    new_terms = ", ".join(f"NEW.{c}" for c in terms.split(", "))
    cases = " ".join(f"WHEN {literal(k)} THEN {literal(v.value)}" for k, v in lifecycle.WHEN_INELIGIBLE.items())
    return f"""-- Generated by smartpay.migrate from smartpay/lifecycle.py: do not edit.
DELETE FROM voucher_lifecycle;
INSERT INTO voucher_lifecycle (from_status, to_status, outcome, review_reason) VALUES
    {rows};
ALTER TABLE vouchers DROP CONSTRAINT IF EXISTS vouchers_status_check;
ALTER TABLE vouchers ADD CONSTRAINT vouchers_status_check CHECK (status IN ({statuses}));
CREATE OR REPLACE FUNCTION smartpay_ineligible_target(beneficiary_status text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE beneficiary_status {cases} ELSE {literal(lifecycle.INELIGIBLE_OTHERWISE.value)} END;
CREATE OR REPLACE FUNCTION smartpay_before_buffr(status text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN status IN ({before});
DROP TRIGGER IF EXISTS vouchers_lifecycle ON vouchers;
CREATE TRIGGER vouchers_lifecycle BEFORE UPDATE ON vouchers FOR EACH ROW
    WHEN (({old_terms}) IS DISTINCT FROM ({new_terms})
          OR (OLD.status IS DISTINCT FROM NEW.status AND (OLD.status, NEW.status) NOT IN (
              {allowed})))
    EXECUTE FUNCTION vouchers_refuse_update();
"""


def generated() -> list[Migration]:
    """Repeatable migrations rendered from Python (applied before the file ones): the lifecycle,
    then the transition functions, whose statement holds the lifecycle's decisions."""
    return [Migration("G", "lifecycle", lifecycle_sql()),
            Migration("G", "transitions", transitions.functions_sql(lifecycle.decision_table()))]


def _apply_generated(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
    done = dict(conn.execute("SELECT name, checksum FROM schema_repeatables").fetchall())
    for migration in generated():
        key = f"generated:{migration.name}"
        if done.get(key) == migration.checksum and not result["applied"]:
            continue
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                """INSERT INTO schema_repeatables (name, checksum) VALUES (%s, %s)
                   ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()""",
                (key, migration.checksum),
            )
        result["generated"].append(key)


def _ensure_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    text PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_repeatables (
               name       text PRIMARY KEY,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


def _apply_repeatables(conn: psycopg.Connection[Any], result: dict[str, Any]) -> None:
    created, missing = access.ensure_roles(conn)
    result["roles_created"] = created
    if missing:
        result["roles_missing"] = [role.name for role in missing]
        result["admin_sql"] = access.admin_sql(conn, missing)
        return
    done = dict(conn.execute("SELECT name, checksum FROM schema_repeatables").fetchall())
    for migration in repeatables():
        if done.get(migration.name) == migration.checksum and not result["applied"]:
            continue
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                """INSERT INTO schema_repeatables (name, checksum) VALUES (%s, %s)
                   ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()""",
                (migration.name, migration.checksum),
            )
        result["reapplied"].append(f"R__{migration.name}")


def apply(conninfo: str) -> dict[str, Any]:
    """Apply pending migrations, then changed repeatables.

    Returns ``{"applied", "already", "changed", "reapplied", "generated", "roles_created": [...]}`` and, when
    roles are missing and may not be created here, ``roles_missing`` and ``admin_sql``.
    """
    result: dict[str, Any] = {"applied": [], "already": [], "changed": [], "reapplied": [], "generated": []}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _ensure_table(conn)
            done = {
                row[0]: row[1] for row in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for migration in available():
                label = f"{migration.version}_{migration.name}"
                if migration.version in done:
                    key = "already" if migration.recorded_as(done[migration.version]) else "changed"
                    result[key].append(label)
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                result["applied"].append(label)
            _apply_generated(conn, result)
            _apply_repeatables(conn, result)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return result
