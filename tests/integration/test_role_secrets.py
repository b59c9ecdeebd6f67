"""Migrate sets each function role's password from its generated secret (template CreateDatabase=true).

Real PostgreSQL (the roles of smartpay.access on the test server) and moto Secrets Manager. The
server here trusts loopback, so a login proves nothing; instead each stored SCRAM-SHA-256 verifier
is checked against the secret's password (RFC 5802/7677), which is what a password login checks.
"""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from psycopg import sql

from migrate.handler import lambda_handler
from smartpay import access
from smartpay.errors import ConfigError
from smartpay_tools.local.lambda_runtime import FakeLambdaContext

pytestmark = pytest.mark.integration

ROLES = ("smartpay_disburse", "smartpay_webhook")
#: Quotes, backslash, dollar-quoting and a statement separator: must arrive as data, never as SQL.
TRICKY = "p'a\"ss\\w$$rd; DROP ROLE smartpay_webhook; --"


def _verifier_matches(verifier: str, password: str) -> bool:
    """SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as PostgreSQL stores it."""
    scheme, params, keys = verifier.split("$")
    iterations, salt = params.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return scheme == "SCRAM-SHA-256" and base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def _stored(pg_url: str, role: str) -> str | None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    assert row is not None, f"role {role} missing on the test server"
    return row[0]


@pytest.fixture()
def secrets(aws_env, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto Secrets Manager; the roles' passwords are cleared again afterwards (roles are cluster-wide)."""
    monkeypatch.setenv("DATABASE_URL", pg_url)
    for name in ("DATABASE_URL_SECRET", "DATABASE_URL_PARAMETER", "DATABASE_HOST"):
        monkeypatch.delenv(name, raising=False)
    parameters.clear_caches()
    with mock_aws():
        sm = boto3.client("secretsmanager")

        def create(role: str, data: dict[str, Any]) -> str:
            return sm.create_secret(Name=f"smartpay/test/db/{role}", SecretString=json.dumps(data))["ARN"]

        yield create
    parameters.clear_caches()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for role in ROLES:
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD NULL").format(sql.Identifier(role)))


def _migrate() -> dict[str, Any]:
    return lambda_handler({}, FakeLambdaContext("smartpay-migrate-test", 512, "req-1", time.time() * 1000 + 60_000))


def test_migrate_sets_each_role_password_from_its_secret(secrets, pg_url: str, monkeypatch) -> None:
    passwords = {"smartpay_disburse": "Gen3ratedAlnumPassw0rd0123456789", "smartpay_webhook": TRICKY}
    arns = {role: secrets(role, {"username": role, "password": pw, "dbname": "smartpay", "port": 5432})
            for role, pw in passwords.items()}
    monkeypatch.setenv("ROLE_SECRETS", json.dumps(arns))

    result = _migrate()

    assert result["passwords_set"] == ["smartpay_disburse", "smartpay_webhook"]
    assert result["passwords_waiting"] == []
    for role, password in passwords.items():
        stored = _stored(pg_url, role)
        assert stored is not None and _verifier_matches(stored, password), role
        assert not _verifier_matches(stored, password + "x")
    assert _stored(pg_url, "smartpay_beneficiaries") is None  # not in ROLE_SECRETS: untouched

    again = _migrate()  # safe to run twice: same passwords, new salts
    assert again["passwords_set"] == ["smartpay_disburse", "smartpay_webhook"]
    assert _verifier_matches(_stored(pg_url, "smartpay_webhook"), TRICKY)


def test_without_role_secrets_nothing_is_set(secrets, pg_url: str, monkeypatch) -> None:
    monkeypatch.delenv("ROLE_SECRETS", raising=False)
    result = _migrate()
    assert "passwords_set" not in result
    assert all(_stored(pg_url, role) is None for role in ROLES)


@pytest.mark.parametrize("secret_for, mapping_role, message", [
    ("smartpay_disburse", "smartpay_webhook", "username 'smartpay_webhook'"),   # mis-wired secret
    ("postgres", "postgres", "does not define"),                                # not a function role
])
def test_miswired_secrets_change_nothing(secrets, pg_url: str, monkeypatch, secret_for, mapping_role,
                                         message) -> None:
    arn = secrets(secret_for, {"username": secret_for, "password": "x" * 32})
    monkeypatch.setenv("ROLE_SECRETS", json.dumps({mapping_role: arn}))
    with pytest.raises(ConfigError, match=message):
        _migrate()
    assert all(_stored(pg_url, role) is None for role in ROLES)


@pytest.mark.parametrize("raw", ["not json", "[]", '{"smartpay_webhook": ""}'])
def test_malformed_role_secrets_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match="ROLE_SECRETS"):
        access.parse_role_secrets(raw)


def test_clear_text_never_reaches_the_server(pg_url: str) -> None:
    """The statement carries a SCRAM verifier, not the password (server logs, pg_stat_statements)."""
    sent: list[str] = []

    class Recording:
        def __init__(self, conn: psycopg.Connection[Any]) -> None:
            self.conn, self.pgconn = conn, conn.pgconn

        def execute(self, query: Any, params: Any = None) -> Any:
            sent.append(query.as_string(self.conn) if isinstance(query, sql.Composable) else str(query))
            return self.conn.execute(query, params)

    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            done, waiting = access.set_passwords(Recording(conn), {"smartpay_webhook": TRICKY})  # type: ignore[arg-type]
        assert (done, waiting) == (["smartpay_webhook"], [])
        alter = [s for s in sent if s.startswith("ALTER ROLE")]
        assert len(alter) == 1 and "SCRAM-SHA-256$" in alter[0] and "DROP ROLE" not in alter[0]
        assert _verifier_matches(_stored(pg_url, "smartpay_webhook"), TRICKY)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute('ALTER ROLE "smartpay_webhook" WITH PASSWORD NULL')
