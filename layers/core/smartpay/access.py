"""Least-privilege PostgreSQL roles: which roles exist, and creating them where we may.

The *privileges* of each role live in ``migrations/R__grants.sql`` (a repeatable migration,
re-applied whenever it changes); this module only owns the role *names* and their creation.

Roles are cluster-wide in PostgreSQL while grants are per database, so creation is
idempotent and race-safe (several databases on one server may migrate at once), roles are
never dropped (another database may use them), and a migrating role that is neither
superuser nor CREATEROLE gets the SQL an administrator must run instead of an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from smartpay.errors import ConfigError


@dataclass(frozen=True)
class Role:
    name: str
    purpose: str
    #: Role-level settings applied when the role is created (cluster-wide, so only then).
    settings: tuple[tuple[str, str], ...] = ()


# A function's role is named in the template (environment ``DB_ROLE``); the local stack
# connects each function as that role, and in AWS each role's credentials are its own secret.
# A function role's timeouts are role settings, applied by the server at login: a client that
# sent them (a startup ``options`` string or ``SET``) would pin its connection behind RDS Proxy.
FUNCTION_TIMEOUTS = (("statement_timeout", "5s"), ("lock_timeout", "5s"))
ROLES: tuple[Role, ...] = (
    Role("smartpay_beneficiaries", "beneficiaries function: reads the registry (incl. PII) and vouchers",
         (("default_transaction_read_only", "on"), *FUNCTION_TIMEOUTS)),
    Role("smartpay_disburse", "disburse function: issues vouchers and sends them to Buffr", FUNCTION_TIMEOUTS),
    Role("smartpay_webhook", "webhook function: applies Buffr status events; never reads beneficiaries",
         FUNCTION_TIMEOUTS),
    # A page's records, heals and cursor commit together: longer statements than a request's.
    Role("smartpay_reconcile", "reconcile function: compares open vouchers with Buffr; no PII",
         (("statement_timeout", "30s"), ("lock_timeout", "30s"))),
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
    if not can_create_roles(conn):
        return [], missing
    sync_settings(conn, [role for role in roles if role not in missing])
    if not missing:
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


def sync_settings(conn: psycopg.Connection[Any], roles: list[Role]) -> list[str]:
    """Bring existing roles' settings to :data:`ROLES` (a role created by an older release keeps
    its settings otherwise); returns the roles changed. Only differing settings are written."""
    changed = []
    for role in roles:
        row = conn.execute("SELECT rolconfig FROM pg_roles WHERE rolname = %s", (role.name,)).fetchone()
        current = set((row[0] if not isinstance(row, dict) else row["rolconfig"]) or []) if row else set()
        wanted = [(key, value) for key, value in role.settings if f"{key}={value}" not in current]
        if not wanted:
            continue
        try:
            with conn.transaction():
                for key, value in wanted:
                    conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
                        sql.Identifier(role.name), sql.Identifier(key), sql.Literal(value)))
            changed.append(role.name)
        except psycopg.errors.InternalError:
            pass  # "tuple concurrently updated": another migration wrote the same settings
    return changed


# --- role passwords from generated secrets (template: CreateDatabase=true) ----------------------

def parse_role_secrets(raw: str) -> dict[str, str]:
    """``ROLE_SECRETS``: a JSON object mapping a role of :data:`ROLES` to its secret's ARN."""
    try:
        mapping = json.loads(raw)
        if not isinstance(mapping, dict) or not all(isinstance(v, str) and v for v in mapping.values()):
            raise ValueError("expected an object of role -> secret ARN")
    except ValueError as exc:
        raise ConfigError(f"ROLE_SECRETS is invalid: {exc}") from None
    unknown = sorted(set(mapping) - ROLE_NAMES)
    if unknown:
        raise ConfigError(f"ROLE_SECRETS names roles that access.py does not define: {unknown}")
    return mapping


def read_role_passwords(mapping: dict[str, str]) -> dict[str, str]:
    """Each role's password from its secret; the secret's ``username`` must be the role itself,
    so a mis-wired secret can never reset another role's password."""
    from aws_lambda_powertools.utilities import parameters

    return {role: role_password(parameters.get_secret(secret_id, transform="json", max_age=0,
                                                     VersionStage="AWSCURRENT"), role)
            for role, secret_id in mapping.items()}


def role_password(data: Any, role: str) -> str:
    """The password of a role secret's value; refused unless its ``username`` is ``role``."""
    if not isinstance(data, dict) or data.get("username") != role:
        raise ConfigError(f"secret for {role} must be JSON with username {role!r}")
    password = data.get("password")
    if not isinstance(password, str) or not password:
        raise ConfigError(f"secret for {role} has no password")
    return password


def set_passwords(conn: psycopg.Connection[Any], passwords: dict[str, str]) -> tuple[list[str], list[str]]:
    """``ALTER ROLE … PASSWORD`` for each existing role; returns (set, missing roles).

    The password is sent as a SCRAM-SHA-256 verifier computed here (libpq's
    ``PQencryptPasswordConn``, as psql's ``\\password`` does), so the clear text never reaches
    the server, its statement log or ``pg_stat_statements``.
    """
    unknown = sorted(set(passwords) - ROLE_NAMES)
    if unknown:
        raise ConfigError(f"refusing to set passwords of roles access.py does not define: {unknown}")
    existing = {role.name for role in ROLES} - {role.name for role in missing_roles(conn)}
    done, waiting = [], []
    for role, password in sorted(passwords.items()):
        if role not in existing:
            waiting.append(role)
            continue
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role),
                                                                      sql.Literal(verifier.decode())))
        done.append(role)
    return done, waiting


def apply_role_secrets(conninfo: str, raw_mapping: str) -> dict[str, list[str]]:
    """Set every mapped role's password from its secret (run by the migrate function, as owner)."""
    passwords = read_role_passwords(parse_role_secrets(raw_mapping))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        done, waiting = set_passwords(conn, passwords)
    return {"passwords_set": done, "passwords_waiting": waiting}
