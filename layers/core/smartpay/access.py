"""Least-privilege PostgreSQL roles: which roles exist, and creating them where we may.

The *privileges* of each role live in ``migrations/R__grants.sql`` (a repeatable migration,
re-applied whenever it changes); this module only owns the role *names* and their creation.

Roles are cluster-wide in PostgreSQL while grants are per database, so creation is
idempotent and race-safe (several databases on one server may migrate at once), roles are
never dropped (another database may use them), and a migrating role that is neither
superuser nor CREATEROLE gets the SQL an administrator must run instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Role:
    name: str
    purpose: str
    #: Role-level settings applied when the role is created (cluster-wide, so only then).
    settings: tuple[tuple[str, str], ...] = ()


# A function's role is named in the template (environment ``DB_ROLE``); the local stack
# connects each function as that role, and in AWS each role's credentials are its own secret.
ROLES: tuple[Role, ...] = (
    Role("smartpay_beneficiaries", "beneficiaries function: reads the registry (incl. PII) and vouchers",
         (("default_transaction_read_only", "on"),)),
    Role("smartpay_disburse", "disburse function: issues vouchers and sends them to Buffr"),
    Role("smartpay_webhook", "webhook function: applies Buffr status events; never reads beneficiaries"),
    Role("smartpay_reconcile", "reconcile function: compares open vouchers with Buffr; no PII"),
    Role("buffr_readonly", "Buffr (partner): vouchers and a PII-masked beneficiaries view, read-only",
         (("default_transaction_read_only", "on"), ("statement_timeout", "30s"))),
    Role("auditor", "auditors: audit trail, webhook log, reconciliation tables and reports, read-only",
         (("default_transaction_read_only", "on"),)),
)
ROLE_NAMES = frozenset(role.name for role in ROLES)


def can_create_roles(conn: psycopg.Connection[Any]) -> bool:
    """True if the connected role is a superuser or has CREATEROLE."""
    row = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def missing_roles(conn: psycopg.Connection[Any], roles: tuple[Role, ...] | None = None) -> list[Role]:
    roles = ROLES if roles is None else roles
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                           ([role.name for role in roles],))}
    return [role for role in roles if role.name not in existing]


def create_statements(role: Role) -> list[sql.Composed]:
    """``CREATE ROLE`` (LOGIN, no password: set one per environment) and its settings."""
    name = sql.Identifier(role.name)
    statements = [sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
                  .format(name)]
    statements += [sql.SQL("ALTER ROLE {} SET {} = {}").format(name, sql.Identifier(key), sql.Literal(value))
                   for key, value in role.settings]
    statements.append(sql.SQL("COMMENT ON ROLE {} IS {}").format(name, sql.Literal(role.purpose)))
    return statements


def admin_sql(conn: psycopg.Connection[Any], roles: list[Role]) -> str:
    """The SQL an administrator runs (once per server) when the migrating role may not create roles."""
    lines = [f"-- run as a superuser or a CREATEROLE role on {conn.info.host}:{conn.info.port}, then migrate again"]
    for role in roles:
        lines += [stmt.as_string(conn) + ";" for stmt in create_statements(role)]
    return "\n".join(lines)


def ensure_roles(conn: psycopg.Connection[Any],
                 roles: tuple[Role, ...] | None = None) -> tuple[list[str], list[Role]]:
    """Create the missing roles if allowed; returns (created names, roles still missing).

    ``conn`` must be in autocommit mode: each role is created in its own transaction, and a
    concurrent creator (another database migrating at the same moment) wins harmlessly.
    """
    roles = ROLES if roles is None else roles
    missing = missing_roles(conn, roles)
    if not missing or not can_create_roles(conn):
        return [], missing
    created = []
    for role in missing:
        try:
            with conn.transaction():
                for statement in create_statements(role):
                    conn.execute(statement)
            created.append(role.name)
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass  # created concurrently by another migration: exactly what we wanted
    return created, missing_roles(conn, roles)
