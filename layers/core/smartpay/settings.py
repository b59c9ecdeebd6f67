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
from pathlib import Path

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


def secret(name: str, *, transform: str | None = None, max_age: int | None = None, force: bool = False) -> str:
    """Resolve a secret: ``<name>_SECRET`` (Secrets Manager) > ``<name>_PARAMETER`` (SSM) > ``<name>``.

    Powertools Parameters caches the value for ``max_age`` seconds per container; ``force``
    fetches it now and refreshes the cache (a login refused with the cached value: rotated).
    """
    age = max_age if max_age is not None else env_int("SECRETS_MAX_AGE", 300, minimum=0)
    secret_id = os.environ.get(f"{name}_SECRET")
    if secret_id:
        from aws_lambda_powertools.utilities import parameters

        # AWSCURRENT said explicitly: the value a rotation's finishSecret promotes (AWS's default;
        # moto's default version does not follow a moved label).
        value = parameters.get_secret(secret_id, max_age=age, force_fetch=force, VersionStage="AWSCURRENT")
        return value if isinstance(value, str) else value.decode()
    parameter_name = os.environ.get(f"{name}_PARAMETER")
    if parameter_name:
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_parameter(parameter_name, decrypt=True, max_age=age, force_fetch=force))
    return env_str(name)


#: Amazon's public CA certificates for RDS and Aurora (every region's RSA2048/RSA4096/ECC384
#: roots) and for RDS Proxy (Amazon Root CA 1-4, Starfield G2), shipped in the layer.
RDS_CA_BUNDLE = Path(__file__).parent / "certs" / "rds-ca-bundle.pem"
#: libpq's modes weaker than verify-full, which only STAGE=local may ask for.
_RELAXED_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca"}


def database_url(*, force: bool = False) -> str:
    """The function's libpq connection string, with TLS settled by :func:`database_tls`.

    ``DATABASE_URL`` (a URL or key=value conninfo), or an RDS-style JSON secret named by
    DATABASE_URL_SECRET. ``DATABASE_HOST``, when set, replaces the secret's host: an RDS-managed
    master secret has none, and the role secrets the template creates cannot name the RDS Proxy
    endpoint (the proxy lists them, so naming it back would be a dependency cycle). ``force``:
    fetch the secret now, past the cache (:func:`secret`).
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    raw = secret("DATABASE_URL", force=force)
    if raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
            params = {
                "host": env_str("DATABASE_HOST", "") or data["host"],
                "port": str(data.get("port", 5432)),
                "dbname": data.get("dbname", "smartpay"),
                "user": data["username"],
                "password": data["password"],
            }
            if data.get("sslmode"):
                params["sslmode"] = data["sslmode"]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"DATABASE_URL secret is not a valid RDS secret: missing {exc}") from None
    else:
        try:
            params = {k: str(v) for k, v in conninfo_to_dict(raw).items()}
        except Exception:  # psycopg.ProgrammingError; its text would repeat the password
            raise ConfigError("DATABASE_URL is not a valid PostgreSQL URL or conninfo") from None
    return make_conninfo(**database_tls(params))


def database_tls(params: dict[str, str]) -> dict[str, str]:
    """Connection parameters with TLS made explicit: ``verify-full`` against the layer's RDS CA bundle.

    Every deployed connection gets it, whatever the URL or secret says (a plain URL without
    ``sslmode`` too: libpq's default ``prefer`` would silently fall back to plain text). An
    ``sslrootcert`` the URL names is kept (a database with another CA). Only ``STAGE=local`` may
    relax it, and only by saying so: ``DATABASE_SSLMODE=disable`` (or another libpq mode) in its
    env-vars file. A weaker mode asked for anywhere else is refused, not quietly upgraded.
    """
    wanted = {m for m in (os.environ.get("DATABASE_SSLMODE", ""), params.get("sslmode", "")) if m}
    unknown = wanted - _RELAXED_SSLMODES - {"verify-full"}
    if unknown:
        raise ConfigError(f"unknown sslmode {sorted(unknown)[0]!r} (DATABASE_SSLMODE or the connection's)")
    relaxed = os.environ.get("DATABASE_SSLMODE", "") in _RELAXED_SSLMODES
    if relaxed:
        if os.environ.get("STAGE") != "local":
            raise ConfigError("DATABASE_SSLMODE may relax TLS on STAGE=local only; deployed connections "
                              "always use verify-full")
        return {**params, "sslmode": os.environ["DATABASE_SSLMODE"]}
    if params.get("sslmode", "verify-full") != "verify-full":
        raise ConfigError(f"the database connection asks for sslmode={params['sslmode']}; only STAGE=local "
                          "may relax TLS (DATABASE_SSLMODE), every other connection uses verify-full")
    return {**params, "sslmode": "verify-full", "sslrootcert": params.get("sslrootcert") or str(RDS_CA_BUNDLE)}


def https_url(name: str) -> str:
    """An outbound base URL from ``name``: https only, except on ``STAGE=local`` (the simulator)."""
    url = env_str(name).rstrip("/")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "https" or (scheme == "http" and os.environ.get("STAGE") == "local"):
        return url
    raise ConfigError(f"{name} must be an https:// URL outside STAGE=local")


def apply_local_endpoints() -> None:
    """SAM local (``smartpay sam-env``): point boto3 at the running local stack.

    ``LOCAL_AWS_ENDPOINT_URL`` (moto: DynamoDB, SSM, Secrets Manager) and
    ``LOCAL_LAMBDA_ENDPOINT_URL`` (the stack's Lambda endpoint) become boto3's own
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_LAMBDA``. The template declares both empty; set on
    any stage but ``local`` they are refused, so a deployed function cannot be pointed elsewhere.
    """
    wanted = {"AWS_ENDPOINT_URL": os.environ.get("LOCAL_AWS_ENDPOINT_URL", ""),
              "AWS_ENDPOINT_URL_LAMBDA": os.environ.get("LOCAL_LAMBDA_ENDPOINT_URL", "")}
    if not any(wanted.values()):
        return
    if os.environ.get("STAGE") != "local":
        raise ConfigError("LOCAL_AWS_ENDPOINT_URL / LOCAL_LAMBDA_ENDPOINT_URL are for STAGE=local only")
    for key, value in wanted.items():
        if value:
            os.environ[key] = value


@cache
def stage() -> str:
    return env_str("STAGE", "local")


apply_local_endpoints()
