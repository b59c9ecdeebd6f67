"""Every deployed database connection is verify-full against the RDS CA bundle in the layer;
only STAGE=local may relax it, and only by saying so (DATABASE_SSLMODE)."""

from __future__ import annotations

import json
import ssl

import pytest
from psycopg.conninfo import conninfo_to_dict

from smartpay.errors import ConfigError
from smartpay.settings import RDS_CA_BUNDLE, database_url

VERIFIED = {"sslmode": "verify-full", "sslrootcert": str(RDS_CA_BUNDLE)}


@pytest.fixture()
def deployed(monkeypatch: pytest.MonkeyPatch):
    for name in ("DATABASE_URL_SECRET", "DATABASE_URL_PARAMETER", "DATABASE_HOST", "DATABASE_SSLMODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAGE", "prod")

    def _url(value: str) -> dict[str, str]:
        monkeypatch.setenv("DATABASE_URL", value)
        return conninfo_to_dict(database_url())
    return _url


def test_plain_url_without_sslmode_gets_verify_full(deployed) -> None:
    parts = deployed("postgresql://app:pw@db.example.internal:5432/smartpay")
    assert parts == {"user": "app", "password": "pw", "host": "db.example.internal", "port": "5432",
                     "dbname": "smartpay", **VERIFIED}


def test_key_value_conninfo_gets_verify_full_too(deployed) -> None:
    parts = deployed("host=db.example.internal dbname=smartpay user=app")
    assert {k: parts[k] for k in VERIFIED} == VERIFIED


def test_rds_secret_json_gets_verify_full(deployed) -> None:
    parts = deployed(json.dumps({"host": "h.rds.amazonaws.com", "username": "u", "password": "p"}))
    assert {k: parts[k] for k in VERIFIED} == VERIFIED and parts["host"] == "h.rds.amazonaws.com"


def test_explicit_verify_full_and_own_root_cert_are_kept(deployed) -> None:
    parts = deployed("postgresql://app@db/smartpay?sslmode=verify-full&sslrootcert=/opt/own-ca.pem")
    assert parts["sslmode"] == "verify-full" and parts["sslrootcert"] == "/opt/own-ca.pem"


@pytest.mark.parametrize("weaker", ["disable", "prefer", "require", "verify-ca"])
def test_deployed_connection_asking_for_weaker_tls_is_refused(deployed, weaker: str) -> None:
    with pytest.raises(ConfigError, match="verify-full"):
        deployed(f"postgresql://app@db/smartpay?sslmode={weaker}")
    with pytest.raises(ConfigError, match="verify-full"):
        deployed(json.dumps({"host": "h", "username": "u", "password": "p", "sslmode": weaker}))


@pytest.mark.parametrize("stage", ["dev", "prod", ""])
def test_only_the_local_stage_may_relax_tls(deployed, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    monkeypatch.setenv("STAGE", stage)
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")
    with pytest.raises(ConfigError, match="STAGE=local"):
        deployed("postgresql://app@db/smartpay")


def test_local_stage_relaxes_tls_only_when_told(deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "local")
    assert {k: v for k, v in deployed("postgresql://app@127.0.0.1/x").items() if k in VERIFIED} == VERIFIED
    monkeypatch.setenv("DATABASE_SSLMODE", "disable")
    assert deployed("postgresql://app@127.0.0.1/x")["sslmode"] == "disable"


def test_unknown_sslmode_is_a_config_error(deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_SSLMODE", "verify-everything")
    with pytest.raises(ConfigError, match="unknown sslmode"):
        deployed("postgresql://app@db/smartpay")


def test_bad_url_error_does_not_repeat_the_password(deployed) -> None:
    with pytest.raises(ConfigError) as caught:
        deployed("postgresql://app:s3cret-pw@db:notaport/smartpay?bogus_option=1")
    assert "s3cret-pw" not in str(caught.value)


def test_the_layer_ships_the_rds_and_rds_proxy_roots() -> None:
    context = ssl.create_default_context(cafile=str(RDS_CA_BUNDLE))
    names = {dict(part[0] for part in cert["subject"])["commonName"] for cert in context.get_ca_certs()}
    # Aurora/RDS in af-south-1 (the stack's region), and RDS Proxy's Amazon Trust Services roots.
    assert {"Amazon RDS af-south-1 Root CA RSA2048 G1", "Amazon RDS af-south-1 Root CA RSA4096 G1",
            "Amazon RDS af-south-1 Root CA ECC384 G1", "Amazon Root CA 1", "Amazon Root CA 2",
            "Amazon Root CA 3", "Amazon Root CA 4"} <= names
