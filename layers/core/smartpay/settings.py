"""Typed settings read once per container from the environment.

Secrets (database URL, Buffr key, webhook secret, API-key hashes) are given directly in the
local env-vars file; deployed, the template sets ``<NAME>_SECRET`` (a Secrets Manager id) or
``<NAME>_PARAMETER`` (an SSM name) instead and they are fetched through Powertools Parameters
with a cache, so a rotated secret is picked up within ``SECRETS_MAX_AGE`` seconds.
"""

from __future__ import annotations

import json
import os
from functools import cache

from smartpay.errors import ConfigError


def env_str(name: str, default: str | None = None) -> str:
    """A required (or defaulted) environment variable; a clear error names what is missing."""
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required but not set")
        return default
    return value


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"environment variable {name}={value} is outside [{minimum}, {maximum}]")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"environment variable {name} must be true/false, got {raw!r}")


def secret(name: str, *, transform: str | None = None, max_age: int | None = None) -> str:
    """Resolve a secret: ``<name>_SECRET`` (Secrets Manager) > ``<name>_PARAMETER`` (SSM) > ``<name>``.

    Powertools Parameters caches the value for ``max_age`` seconds per container.
    """
    age = max_age if max_age is not None else env_int("SECRETS_MAX_AGE", 300, minimum=0)
    secret_id = os.environ.get(f"{name}_SECRET")
    if secret_id:
        from aws_lambda_powertools.utilities import parameters

        value = parameters.get_secret(secret_id, max_age=age)
        return value if isinstance(value, str) else value.decode()
    parameter_name = os.environ.get(f"{name}_PARAMETER")
    if parameter_name:
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_parameter(parameter_name, decrypt=True, max_age=age))
    return env_str(name)


def database_url() -> str:
    """``DATABASE_URL``, or a libpq URL built from an RDS-style JSON secret named by DATABASE_URL_SECRET.

    ``DATABASE_HOST``, when set, replaces the secret's host: an RDS-managed master secret has
    none, and the role secrets the template creates cannot name the RDS Proxy endpoint (the
    proxy lists them, so naming it back would be a dependency cycle).
    """
    raw = secret("DATABASE_URL")
    if raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
            from psycopg.conninfo import make_conninfo

            return make_conninfo(
                host=env_str("DATABASE_HOST", "") or data["host"],
                port=str(data.get("port", 5432)),
                dbname=data.get("dbname", "smartpay"),
                user=data["username"],
                password=data["password"],
                sslmode=data.get("sslmode", "require"),
            )
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"DATABASE_URL secret is not a valid RDS secret: missing {exc}") from None
    return raw


@cache
def stage() -> str:
    return env_str("STAGE", "local")
