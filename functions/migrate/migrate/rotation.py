"""Secrets Manager rotation of the function roles' logins, run by the migrate function.

Secrets Manager invokes the function with ``{"Step", "SecretId", "ClientRequestToken"}`` once per
step, in order, retrying a step that fails; every step may therefore run again and does nothing
the second time:

* ``createSecret``: the version ``ClientRequestToken`` (labelled AWSPENDING by Secrets Manager)
  gets the current value with a new generated password, unless it has one already;
* ``setSecret``: the schema owner sets the role's password to the pending one (the code
  migrations use, :func:`smartpay.access.set_passwords`), unless the role already logs in with it;
* ``testSecret``: a login as the role with the pending password must be that role;
* ``finishSecret``: AWSCURRENT moves to the pending version (Secrets Manager labels the old one
  AWSPREVIOUS).

Its logins go to the cluster's writer itself (``DATABASE_WRITER_HOST``), not to
``DATABASE_HOST``: RDS Proxy checks a client's password against the secret's AWSCURRENT value,
so the pending one would be refused there. A step that raises counts
``DatabaseLoginRotationFailed`` (alarmed: Secrets Manager only retries and gives up).

Single user: the role keeps its name and only its password changes, because a function runs
only as its own role (``DB_ROLE``, smartpay.db); alternating users would fail that check. Only
the secrets of ``ROLE_SECRETS`` are rotated here: any other is refused before anything changes.
Passwords are never logged.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from psycopg.conninfo import make_conninfo

from smartpay import access
from smartpay.db import password_refused
from smartpay.observability import logger, metrics
from smartpay.settings import database_url, env_str

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
#: As the template's GenerateSecretString: 32 characters, no punctuation (nothing to escape in a URL).
PASSWORD_LENGTH = 32


class RotationRefused(Exception):
    """A rotation event this function must not act on (unknown secret, step or version)."""


def is_rotation_event(event: Any) -> bool:
    return isinstance(event, dict) and {"Step", "SecretId", "ClientRequestToken"} <= event.keys()


def rotate(event: dict[str, Any]) -> dict[str, str]:
    """Run one rotation step; returns what it did (no secret values). A step that raises is
    counted (``DatabaseLoginRotationFailed``, flushed by the handler) and raised again, so Secrets
    Manager sees it fail."""
    try:
        return _rotate(event)
    except Exception as exc:
        metrics.add_metric(name="DatabaseLoginRotationFailed", unit=MetricUnit.Count, value=1)
        logger.error("secret rotation failed", extra={"step": event["Step"], "secret": event["SecretId"],
                                                      "version": event["ClientRequestToken"],
                                                      "error": type(exc).__name__})
        raise


def _rotate(event: dict[str, Any]) -> dict[str, str]:
    step, token = event["Step"], event["ClientRequestToken"]
    if step not in STEPS:
        raise RotationRefused(f"unknown rotation step {step!r}")
    import boto3  # here, not at init: migrate's cold start loads no botocore client (test_cold_start)

    sm = boto3.client("secretsmanager")
    metadata = sm.describe_secret(SecretId=event["SecretId"])
    arn = metadata["ARN"]
    roles = {secret_arn: role for role, secret_arn in
             access.parse_role_secrets(env_str("ROLE_SECRETS", "{}")).items()}
    if arn not in roles:
        raise RotationRefused(f"secret {arn} is not a role secret of ROLE_SECRETS: not rotated here")
    role = roles[arn]
    if not metadata.get("RotationEnabled"):
        raise RotationRefused(f"rotation is not enabled on the secret of {role}")
    stages = metadata.get("VersionIdsToStages", {})
    if token not in stages:
        raise RotationRefused(f"version {token} of the secret of {role} is not being rotated")
    if "AWSCURRENT" in stages[token]:
        outcome = "already current"
    elif "AWSPENDING" not in stages[token]:
        raise RotationRefused(f"version {token} of the secret of {role} is not AWSPENDING")
    elif step == "createSecret":
        outcome = _create(sm, arn, token, role)
    elif step == "setSecret":
        outcome = _set(sm, arn, token, role)
    elif step == "testSecret":
        outcome = _test(sm, arn, token, role)
    else:
        current = next(version for version, labels in stages.items() if "AWSCURRENT" in labels)
        sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token,
                                       RemoveFromVersionId=current)
        outcome = "AWSCURRENT moved"
    result = {"step": step, "role": role, "version": token, "outcome": outcome}
    logger.info("secret rotation", extra=result)
    return result


def _value(sm: Any, arn: str, stage: str, token: str | None = None) -> dict[str, Any]:
    version = {"VersionId": token} if token else {}
    data = json.loads(sm.get_secret_value(SecretId=arn, VersionStage=stage, **version)["SecretString"])
    if not isinstance(data, dict):
        raise RotationRefused(f"secret {arn} is not a JSON object")
    return data


def _create(sm: Any, arn: str, token: str, role: str) -> str:
    current = _value(sm, arn, "AWSCURRENT")
    access.role_password(current, role)  # the current value names this role: never rotate a mis-wired one
    try:
        _value(sm, arn, "AWSPENDING", token)
    except sm.exceptions.ResourceNotFoundException:  # the version Secrets Manager made has no value yet
        password = sm.get_random_password(PasswordLength=PASSWORD_LENGTH, ExcludePunctuation=True)["RandomPassword"]
        sm.put_secret_value(SecretId=arn, ClientRequestToken=token, VersionStages=["AWSPENDING"],
                            SecretString=json.dumps({**current, "password": password}))
        return "pending created"
    return "pending already created"


def _owner_conninfo() -> str:
    """The owner's connection (TLS as ever) to the cluster's writer, ``DATABASE_WRITER_HOST``, in
    place of ``DATABASE_HOST`` (the proxy, which would refuse a pending password); without it,
    the owner's own host (a database that is not behind a proxy, the local stack)."""
    writer = env_str("DATABASE_WRITER_HOST", "")
    return make_conninfo(database_url(), host=writer) if writer else database_url()


def _role_conninfo(role: str, password: str) -> str:
    """The owner's connection to the writer, logging in as ``role`` instead."""
    return make_conninfo(_owner_conninfo(), user=role, password=password)


def _logs_in(role: str, password: str) -> bool:
    try:
        with psycopg.connect(_role_conninfo(role, password), autocommit=True):
            return True
    except psycopg.OperationalError as exc:
        if password_refused(exc):
            return False
        raise


def _set(sm: Any, arn: str, token: str, role: str) -> str:
    pending = access.role_password(_value(sm, arn, "AWSPENDING", token), role)
    if _logs_in(role, pending):
        return "password already set"
    with psycopg.connect(_owner_conninfo(), autocommit=True) as conn:
        _, waiting = access.set_passwords(conn, {role: pending})
    if waiting:
        raise RotationRefused(f"role {role} does not exist in the database: run migrate first")
    return "password set"


def _test(sm: Any, arn: str, token: str, role: str) -> str:
    pending = access.role_password(_value(sm, arn, "AWSPENDING", token), role)
    with psycopg.connect(_role_conninfo(role, pending), autocommit=True) as conn:
        row = conn.execute("SELECT current_user").fetchone()
    if not row or row[0] != role:
        raise RotationRefused(f"the pending login of {role} connected as {row[0] if row else None}")
    return "pending login works"
