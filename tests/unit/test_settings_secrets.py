"""Secrets resolve through Powertools Parameters (moto): Secrets Manager > SSM > plain env var."""

import json

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from smartpay import auth, settings
from smartpay.errors import ConfigError


@pytest.fixture()
def aws(aws_env, monkeypatch):
    for name in ("BUFFR_API_KEY", "BUFFR_API_KEY_SECRET", "BUFFR_API_KEY_PARAMETER", "DATABASE_URL",
                 "DATABASE_URL_SECRET", "DATABASE_URL_PARAMETER"):
        monkeypatch.delenv(name, raising=False)
    parameters.clear_caches()
    with mock_aws():
        yield
    parameters.clear_caches()


def test_plain_env_var_locally(aws, monkeypatch) -> None:
    monkeypatch.setenv("BUFFR_API_KEY", "local-key")
    assert settings.secret("BUFFR_API_KEY") == "local-key"


def test_secrets_manager_wins_and_is_cached(aws, monkeypatch) -> None:
    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name="smartpay/buffr", SecretString="from-secrets-manager")["ARN"]
    monkeypatch.setenv("BUFFR_API_KEY_SECRET", arn)
    monkeypatch.setenv("BUFFR_API_KEY", "ignored")
    assert settings.secret("BUFFR_API_KEY") == "from-secrets-manager"
    sm.put_secret_value(SecretId=arn, SecretString="rotated")
    assert settings.secret("BUFFR_API_KEY") == "from-secrets-manager"  # cached for SECRETS_MAX_AGE
    parameters.clear_caches()  # what the passing of SECRETS_MAX_AGE does
    assert settings.secret("BUFFR_API_KEY") == "rotated"


def test_ssm_parameter_holds_the_api_key_store(aws, monkeypatch) -> None:
    store = [{"key_id": "b1", "principal": "buffr", "sha256": auth.hash_key("k"), "scopes": ["beneficiaries:read"]}]
    boto3.client("ssm").put_parameter(Name="/smartpay/api-keys", Value=json.dumps(store), Type="SecureString")
    monkeypatch.setenv("API_KEYS_PARAMETER", "/smartpay/api-keys")
    entries = auth.parse_store(settings.secret("API_KEYS"))
    assert auth.authenticate("k", entries).principal == "buffr"


def test_rds_secret_json_becomes_a_conninfo(aws, monkeypatch) -> None:
    secret = {"host": "db.internal", "port": 5432, "dbname": "smartpay", "username": "app", "password": "p w"}
    arn = boto3.client("secretsmanager").create_secret(Name="smartpay/db", SecretString=json.dumps(secret))["ARN"]
    monkeypatch.setenv("DATABASE_URL_SECRET", arn)
    monkeypatch.setenv("STAGE", "dev")
    monkeypatch.delenv("DATABASE_SSLMODE", raising=False)
    url = settings.database_url()
    assert "host=db.internal" in url and "user=app" in url and "sslmode=verify-full" in url


def test_missing_setting_names_the_variable(aws) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        settings.database_url()


@pytest.mark.parametrize("raw", ["abc", "-1"])
def test_bad_integer_names_the_variable(monkeypatch, raw) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", raw)
    with pytest.raises(ConfigError, match="DB_POOL_SIZE"):
        settings.env_int("DB_POOL_SIZE", 2, minimum=1)
