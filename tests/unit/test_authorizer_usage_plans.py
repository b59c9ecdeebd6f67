"""The authorizer names each principal's usage plan (usageIdentifierKey) for API Gateway's throttling."""

import json
import time

import pytest

from authorizer.handler import lambda_handler
from smartpay import auth
from smartpay.errors import ConfigError
from smartpay_tools.local.lambda_runtime import FakeLambdaContext

METHOD_ARN = "arn:aws:execute-api:af-south-1:123456789012:abc123/prod/POST/api/v1/beneficiaries/verify"


def _event(key: str) -> dict:
    return {"type": "REQUEST", "methodArn": METHOD_ARN, "resource": "/api/v1/beneficiaries/verify",
            "path": "/api/v1/beneficiaries/verify", "httpMethod": "POST", "headers": {"X-Api-Key": key}}


@pytest.fixture()
def key_store(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        {"key_id": "buffr-1", "principal": "buffr", "sha256": auth.hash_key("k-buffr"),
         "scopes": ["beneficiaries:read"], "usage_key": "usage-key-buffr-0123456789abcdef"},
        {"key_id": "op-1", "principal": "operator", "sha256": auth.hash_key("k-op"), "scopes": ["vouchers:write"]},
    ]
    for name in ("API_KEYS_SECRET", "API_KEYS_PARAMETER", "API_KEYS_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("API_KEYS", json.dumps(entries))


def _invoke(key: str) -> dict:
    context = FakeLambdaContext("smartpay-authorizer-test", 256, "req-1", time.time() * 1000 + 10_000)
    return lambda_handler(_event(key), context)


def test_authorizer_returns_the_principals_usage_key(key_store: None) -> None:
    result = _invoke("k-buffr")
    assert result["usageIdentifierKey"] == "usage-key-buffr-0123456789abcdef"
    assert result["principalId"] == "buffr"
    assert result["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    # The usage key is for API Gateway only: never in the context the functions see.
    assert "usage-key" not in json.dumps(result["context"])


def test_entry_without_usage_key_is_not_metered(key_store: None) -> None:
    result = _invoke("k-op")
    assert "usageIdentifierKey" not in result
    assert result["principalId"] == "operator"


def test_unknown_key_still_unauthorized(key_store: None) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _invoke("k-nope")


def test_usage_key_must_be_a_string() -> None:
    bad = [{"principal": "buffr", "sha256": auth.hash_key("k"), "scopes": [], "usage_key": 42}]
    with pytest.raises(ConfigError, match="usage_key"):
        auth.parse_store(json.dumps(bad))
