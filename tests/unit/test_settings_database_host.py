"""DATABASE_HOST overrides the secret's host (RDS-managed master secret; role secrets behind RDS Proxy)."""

import json

import pytest
from psycopg.conninfo import conninfo_to_dict

from smartpay.errors import ConfigError
from smartpay.settings import RDS_CA_BUNDLE, database_url


@pytest.fixture()
def rds_secret(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DATABASE_URL_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_URL_PARAMETER", raising=False)
    monkeypatch.delenv("DATABASE_HOST", raising=False)
    monkeypatch.setenv("STAGE", "prod")  # a deployed function (TLS: tests/unit/test_database_tls.py)
    monkeypatch.delenv("DATABASE_SSLMODE", raising=False)

    def _set(data: dict) -> None:
        monkeypatch.setenv("DATABASE_URL", json.dumps(data))
    return _set


def test_proxy_host_from_environment_wins(rds_secret, monkeypatch: pytest.MonkeyPatch) -> None:
    rds_secret({"username": "smartpay_webhook", "password": "p@ss word'", "dbname": "smartpay", "port": 5432})
    monkeypatch.setenv("DATABASE_HOST", "smartpay-prod.proxy-abc.af-south-1.rds.amazonaws.com")
    parts = conninfo_to_dict(database_url())
    assert parts == {"host": "smartpay-prod.proxy-abc.af-south-1.rds.amazonaws.com", "port": "5432",
                     "dbname": "smartpay", "user": "smartpay_webhook", "password": "p@ss word'",
                     "sslmode": "verify-full", "sslrootcert": str(RDS_CA_BUNDLE)}


def test_secret_host_used_when_no_override(rds_secret) -> None:
    rds_secret({"username": "u", "password": "p", "host": "db.internal"})
    assert conninfo_to_dict(database_url())["host"] == "db.internal"


def test_no_host_anywhere_is_a_config_error(rds_secret) -> None:
    rds_secret({"username": "u", "password": "p"})
    with pytest.raises(ConfigError, match="host"):
        database_url()
