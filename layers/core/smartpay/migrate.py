"""Apply the numbered SQL migrations in order, once each, then the repeatable ones.

Safe to run twice and safe to run concurrently: an advisory lock serialises runners on a
database, each file is applied in its own transaction together with its row in
``schema_migrations``, and a numbered file that changed after it was applied is reported,
not re-run.

Repeatable migrations (``R__<name>.sql``, e.g. the access grants) describe a desired state
and are written to be re-run: one is applied again whenever its checksum differs from the
one recorded in ``schema_repeatables`` *or* a numbered migration was just applied (a new or
re-created table starts with no grants). They run after the roles of :mod:`smartpay.access`
exist; if the migrating role may not create them, the repeatables wait, and the result's
``admin_sql`` holds what an administrator must run before migrating again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from smartpay import access

_LOCK_KEY = 0x5A7E_9A11  # arbitrary, constant: "smartpay migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REPEATABLE = re.compile(r"^R__([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


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

    Returns ``{"applied", "already", "changed", "reapplied", "roles_created": [...]}`` and, when
    roles are missing and may not be created here, ``roles_missing`` and ``admin_sql``.
    """
    result: dict[str, Any] = {"applied": [], "already": [], "changed": [], "reapplied": []}
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
                    key = "already" if done[migration.version] == migration.checksum else "changed"
                    result[key].append(label)
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                result["applied"].append(label)
            _apply_repeatables(conn, result)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return result
