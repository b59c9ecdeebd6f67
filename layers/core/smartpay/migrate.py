"""Apply the numbered SQL migrations in order, once each.

Safe to run twice and safe to run concurrently: a transaction-level advisory lock serialises
runners, each file is applied in its own transaction together with its row in
``schema_migrations``, and a file that changed after it was applied is reported, not re-run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

_LOCK_KEY = 0x5A7E_9A11  # arbitrary, constant: "smartpay migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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


def _ensure_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    text PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


def apply(conninfo: str) -> dict[str, list[str]]:
    """Apply pending migrations; returns ``{"applied": [...], "already": [...], "changed": [...]}``."""
    result: dict[str, list[str]] = {"applied": [], "already": [], "changed": []}
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
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return result
