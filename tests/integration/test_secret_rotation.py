"""Rotation of a function role's login: the migrate function's four Secrets Manager steps, and a
warm function's pool across a rotation.

Real PostgreSQL and moto Secrets Manager. The machine's server trusts loopback logins, which
would prove nothing about a password; these tests start a throwaway server of their own on which
every login checks its password (SCRAM-SHA-256), so "logs in with the new password and not the
old" is what the server decides.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.secretsmanager.models import secretsmanager_backends
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from migrate import rotation
from migrate.handler import lambda_handler
from smartpay import access, db
from smartpay.errors import DatabaseUnavailable
from smartpay_tools.local.lambda_runtime import FakeLambdaContext
from smartpay_tools.local.services import start_embedded

pytestmark = pytest.mark.integration

ROLE = "smartpay_disburse"
OLD = "OldPassw0rdOldPassw0rdOldPassw0rd"
REGION = "af-south-1"


@pytest.fixture(scope="module")
def owner_url() -> Iterator[str]:
    """A server of our own whose logins check passwords; the function roles exist on it."""
    base = Path(tempfile.mkdtemp(prefix="smartpay-rotation-"))
    base.chmod(0o755)  # the server runs as the postgres user when the tests run as root
    server = start_embedded(base / "pgdata", password=uuid.uuid4().hex)
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            _, missing = access.ensure_roles(conn)
            assert not missing
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _logs_in(owner_url: str, role: str, password: str) -> bool:
    try:
        with psycopg.connect(make_conninfo(owner_url, user=role, password=password)) as conn:
            return conn.execute("SELECT current_user").fetchone() == (role,)
    except psycopg.OperationalError as exc:
        assert db.password_refused(exc), exc  # refused for its password, nothing else
        return False


def _stored_verifier(owner_url: str, role: str) -> str:
    with psycopg.connect(owner_url) as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture()
def migrate_env(aws_env, owner_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The migrate function's environment: owner URL, ROLE_SECRETS naming the role's secret (moto)."""
    for name in ("DATABASE_URL_SECRET", "DATABASE_URL_PARAMETER", "DATABASE_HOST", "DB_ROLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", owner_url)
    parameters.clear_caches()
    with psycopg.connect(owner_url, autocommit=True) as conn:
        access.set_passwords(conn, {ROLE: OLD})
    with mock_aws():
        sm = boto3.client("secretsmanager")
        port = conninfo_to_dict(owner_url)["port"]
        arn = sm.create_secret(Name=f"smartpay/test/db/{ROLE}", SecretString=json.dumps(
            {"username": ROLE, "password": OLD, "dbname": "smartpay", "port": int(port), "engine": "postgres"}))["ARN"]
        monkeypatch.setenv("ROLE_SECRETS", json.dumps({ROLE: arn}))
        yield {"sm": sm, "arn": arn, "port": port}
    parameters.clear_caches()
    db.close_pool()


def _start_rotation(arn: str) -> str:
    """What RotateSecret does before it invokes the rotation function: rotation enabled, and a
    new version (the ClientRequestToken) labelled AWSPENDING, with no value yet."""
    token = str(uuid.uuid4())
    secret = secretsmanager_backends[DEFAULT_ACCOUNT_ID][REGION].secrets[arn]
    secret.rotation_requested = secret.rotation_enabled = True
    secret.remove_version_stages_from_old_versions(["AWSPENDING"])
    secret.versions[token] = {"createdate": int(time.time()), "version_id": token, "version_stages": ["AWSPENDING"]}
    return token


def _step(step: str, arn: str, token: str) -> dict[str, Any]:
    context = FakeLambdaContext("smartpay-migrate-test", 512, "req-rotate", time.time() * 1000 + 60_000)
    return lambda_handler({"Step": step, "SecretId": arn, "ClientRequestToken": token}, context)


def _password(sm: Any, arn: str, stage: str) -> str:
    return str(json.loads(sm.get_secret_value(SecretId=arn, VersionStage=stage)["SecretString"])["password"])


def _state(sm: Any, arn: str, owner_url: str) -> dict[str, Any]:
    """Everything a step may change: each version's labels and value, and the role's stored verifier."""
    versions = {}
    for version in sm.list_secret_version_ids(SecretId=arn)["Versions"]:
        try:
            value = sm.get_secret_value(SecretId=arn, VersionId=version["VersionId"])["SecretString"]
        except sm.exceptions.ResourceNotFoundException:
            value = None
        versions[version["VersionId"]] = (sorted(version.get("VersionStages", [])), value)
    return {"versions": versions, "verifier": _stored_verifier(owner_url, ROLE)}


def test_four_steps_rotate_the_role_login(migrate_env, owner_url: str) -> None:
    sm, arn = migrate_env["sm"], migrate_env["arn"]
    token = _start_rotation(arn)
    for step in rotation.STEPS:
        _step(step, arn, token)

    new = _password(sm, arn, "AWSCURRENT")
    assert new != OLD and len(new) == rotation.PASSWORD_LENGTH and new.isalnum()
    assert sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["VersionId"] == token
    assert _password(sm, arn, "AWSPREVIOUS") == OLD
    assert json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"]) == {
        "username": ROLE, "password": new, "dbname": "smartpay", "port": int(migrate_env["port"]), "engine": "postgres"}
    assert _logs_in(owner_url, ROLE, new)
    assert not _logs_in(owner_url, ROLE, OLD)


def test_each_step_repeated_changes_nothing_more(migrate_env, owner_url: str) -> None:
    sm, arn = migrate_env["sm"], migrate_env["arn"]
    token = _start_rotation(arn)
    outcomes = []
    for step in rotation.STEPS:
        _step(step, arn, token)
        after_once = _state(sm, arn, owner_url)
        outcomes.append(_step(step, arn, token)["outcome"])  # Secrets Manager retrying the step
        assert _state(sm, arn, owner_url) == after_once, step

    assert outcomes == ["pending already created", "password already set", "pending login works", "already current"]
    assert _logs_in(owner_url, ROLE, _password(sm, arn, "AWSCURRENT"))
    assert not _logs_in(owner_url, ROLE, OLD)


def test_a_secret_outside_role_secrets_is_refused(migrate_env, owner_url: str) -> None:
    sm = migrate_env["sm"]
    # Names the role, but ROLE_SECRETS does not map it: whoever owns it, migrate does not rotate it.
    other = sm.create_secret(Name=f"smartpay/other/db/{ROLE}", SecretString=json.dumps(
        {"username": ROLE, "password": OLD, "dbname": "smartpay", "port": int(migrate_env["port"])}))["ARN"]
    token = _start_rotation(other)
    before = _state(sm, other, owner_url)

    for step in rotation.STEPS:
        with pytest.raises(rotation.RotationRefused, match="not a role secret of ROLE_SECRETS"):
            _step(step, other, token)

    assert _state(sm, other, owner_url) == before
    assert _password(sm, other, "AWSCURRENT") == OLD
    assert _logs_in(owner_url, ROLE, OLD)


def test_failing_test_step_leaves_awscurrent_and_migrate_restores_the_login(migrate_env, owner_url: str) -> None:
    sm, arn = migrate_env["sm"], migrate_env["arn"]
    token = _start_rotation(arn)
    _step("createSecret", arn, token)
    _step("setSecret", arn, token)
    pending = json.loads(sm.get_secret_value(SecretId=arn, VersionId=token)["SecretString"])["password"]
    with psycopg.connect(owner_url, autocommit=True) as conn:  # the database ends up with neither password
        access.set_passwords(conn, {ROLE: "SomethingElse0123456789abcdefghij"})

    with pytest.raises(psycopg.OperationalError) as refused:
        _step("testSecret", arn, token)
    assert db.password_refused(refused.value)
    assert pending not in str(refused.value)

    current = sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")
    assert current["VersionId"] != token and json.loads(current["SecretString"])["password"] == OLD
    stages = {v["VersionId"]: v.get("VersionStages", []) for v in sm.list_secret_version_ids(SecretId=arn)["Versions"]}
    assert stages[token] == ["AWSPENDING"]  # left behind for the runbook
    # The runbook's recovery: invoking migrate sets each role's password from AWSCURRENT again.
    result = lambda_handler({}, FakeLambdaContext("smartpay-migrate-test", 512, "req-migrate", time.time() * 1000 + 60_000))
    assert result["passwords_set"] == [ROLE]
    assert _logs_in(owner_url, ROLE, OLD)
    assert not _logs_in(owner_url, ROLE, pending)


def _rotation_failures(out: str) -> list[tuple[str, float]]:
    """(namespace, value) of every ``DatabaseLoginRotationFailed`` in the EMF lines printed."""
    found = []
    for line in out.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            if any(m["Name"] == "DatabaseLoginRotationFailed" for m in directive["Metrics"]):
                found.append((directive["Namespace"], blob["DatabaseLoginRotationFailed"]))
    return found


def test_a_failing_step_counts_a_failed_rotation_and_a_rotation_that_works_does_not(
        migrate_env, owner_url: str, capsys, caplog) -> None:
    sm, arn = migrate_env["sm"], migrate_env["arn"]
    token = _start_rotation(arn)
    capsys.readouterr()
    for step in rotation.STEPS:
        _step(step, arn, token)
    assert _rotation_failures(capsys.readouterr().out) == []

    token = _start_rotation(arn)
    _step("createSecret", arn, token)
    pending = json.loads(sm.get_secret_value(SecretId=arn, VersionId=token)["SecretString"])["password"]
    capsys.readouterr()
    caplog.clear()
    with psycopg.connect(owner_url, autocommit=True) as conn:  # the pending password never set
        access.set_passwords(conn, {ROLE: "SomethingElse0123456789abcdefghij"})
    with pytest.raises(psycopg.OperationalError):
        _step("testSecret", arn, token)

    assert _rotation_failures(capsys.readouterr().out) == [("KetchupSmartPay", [1.0])]
    failed = [r for r in caplog.records if r.getMessage() == "secret rotation failed"]
    assert [(r.step, r.version, r.error) for r in failed] == [("testSecret", token, "OperationalError")]
    assert pending not in repr([r.__dict__ for r in caplog.records])


def test_the_rotation_logs_in_to_the_writer_not_through_database_host(
        migrate_env, owner_url: str, monkeypatch) -> None:
    """Deployed, DATABASE_HOST is RDS Proxy, which checks a password against AWSCURRENT and would
    refuse the pending one. Here it names an address nothing listens on: every step still works,
    because the rotation connects to DATABASE_WRITER_HOST (the writer) instead."""
    sm, arn = migrate_env["sm"], migrate_env["arn"]
    owner = conninfo_to_dict(owner_url)
    monkeypatch.setenv("DATABASE_URL", json.dumps({  # the owner's RDS-managed secret names no host
        "username": owner["user"], "password": owner["password"], "port": int(owner["port"]),
        "dbname": owner["dbname"]}))
    monkeypatch.setenv("DATABASE_HOST", "127.0.0.2")  # the "proxy": a refused connection
    monkeypatch.setenv("DATABASE_WRITER_HOST", str(owner["host"]))
    parameters.clear_caches()
    token = _start_rotation(arn)

    outcomes = [_step(step, arn, token)["outcome"] for step in rotation.STEPS]

    assert outcomes == ["pending created", "password set", "pending login works", "AWSCURRENT moved"]
    new = _password(sm, arn, "AWSCURRENT")
    assert new != OLD and _logs_in(owner_url, ROLE, new) and not _logs_in(owner_url, ROLE, OLD)
    with pytest.raises(psycopg.OperationalError):  # what DATABASE_HOST alone would have met
        psycopg.connect(make_conninfo(owner_url, host="127.0.0.2"), connect_timeout=2).close()


def _as_function(monkeypatch: pytest.MonkeyPatch, arn: str) -> None:
    """The disburse function's environment: its role secret (no host) and DATABASE_HOST."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL_SECRET", arn)
    monkeypatch.setenv("DATABASE_HOST", "127.0.0.1")
    monkeypatch.setenv("DB_ROLE", ROLE)


def test_a_warm_pool_opens_new_connections_after_a_rotation(migrate_env, owner_url: str, monkeypatch) -> None:
    arn = migrate_env["arn"]
    monkeypatch.setenv("DB_POOL_TIMEOUT_S", "2")
    monkeypatch.setenv("SECRETS_MAX_AGE", "300")
    _as_function(monkeypatch, arn)
    db.close_pool()
    with db.connection() as conn:  # warm: a pooled session and the secret cached, both before the rotation
        assert conn.execute("SELECT current_user AS r").fetchone() == {"r": ROLE}

    monkeypatch.setenv("DATABASE_URL", owner_url)  # the migrate function rotates, in its own container
    monkeypatch.delenv("DATABASE_URL_SECRET")
    token = _start_rotation(arn)
    for step in rotation.STEPS:
        _step(step, arn, token)
    _as_function(monkeypatch, arn)

    with db.connection() as old_session, db.connection() as new_session:  # the second one is a new login
        assert old_session.execute("SELECT current_user AS r").fetchone() == {"r": ROLE}
        assert new_session.execute("SELECT current_user AS r").fetchone() == {"r": ROLE}
        assert old_session is not new_session
    assert db.get_pool().get_stats()["connections_num"] == 2  # before the rotation, and after it (retried inside)


def test_a_login_refused_after_the_refetch_is_a_503(migrate_env, owner_url: str, monkeypatch) -> None:
    arn = migrate_env["arn"]
    monkeypatch.setenv("DB_POOL_TIMEOUT_S", "1")
    _as_function(monkeypatch, arn)
    with psycopg.connect(owner_url, autocommit=True) as conn:  # the database holds neither value
        access.set_passwords(conn, {ROLE: "SomethingElse0123456789abcdefghij"})
    db.close_pool()

    with pytest.raises(DatabaseUnavailable), db.connection():
        pass
