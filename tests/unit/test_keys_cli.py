"""``smartpay keys add|list|revoke|rotate --stage S`` against moto's SSM and API Gateway: only
hashes are stored, the key is printed once, and the authorizer (reading the same parameter)
accepts an issued key and refuses a revoked one once its cache expires. One parameter per key:
concurrent writers never undo each other, and the store holds hundreds of keys."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from authorizer.handler import lambda_handler
from smartpay import auth
from smartpay_tools.cli import keys
from smartpay_tools.local.lambda_runtime import FakeLambdaContext

STAGE = "prod"
NAME = keys.parameter_name(STAGE)
METHOD_ARN = "arn:aws:execute-api:af-south-1:123456789012:abc123/prod/POST/api/v1/beneficiaries/verify"


@pytest.fixture()
def aws(aws_env, monkeypatch: pytest.MonkeyPatch):
    for name in ("API_KEYS", "API_KEYS_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("API_KEYS_PATH", NAME)  # the authorizer reads the path keys writes
    parameters.clear_caches()
    with mock_aws():
        yield
    parameters.clear_caches()


def _authorize(key: str) -> dict:
    event = {"type": "REQUEST", "methodArn": METHOD_ARN, "resource": "/api/v1/beneficiaries/verify",
             "path": "/api/v1/beneficiaries/verify", "httpMethod": "POST", "headers": {"x-api-key": key}}
    return lambda_handler(event, FakeLambdaContext("smartpay-authorizer-prod", 256, "r", time.time() * 1000 + 9000))


def _stored() -> str:
    """Every key's parameter under the path, as one JSON list (sorted by name)."""
    pages = boto3.client("ssm").get_paginator("get_parameters_by_path").paginate(Path=NAME, WithDecryption=True)
    return "[" + ",".join(p["Value"] for p in sorted((p for page in pages for p in page["Parameters"]),
                                                       key=lambda p: p["Name"])) + "]"


def test_add_stores_only_the_hash_and_the_authorizer_accepts_the_key(aws) -> None:
    usage_id = boto3.client("apigateway").create_api_key(name="smartpay-buffr-prod", enabled=True)["id"]
    usage_value = keys.usage_key_value(boto3.client("apigateway"), usage_id)
    store = keys.KeyStore(boto3.client("ssm"), NAME)
    entry, key = store.add("buffr", usage_key=usage_value, key_id="buffr-2026-11")
    raw = _stored()
    assert key not in raw and auth.hash_key(key) in raw
    assert boto3.client("ssm").get_parameter(Name=f"{NAME}/buffr-2026-11")["Parameter"]["Type"] == "SecureString"
    assert json.loads(raw) == [entry] and entry["scopes"] == ["beneficiaries:read"]
    result = _authorize(key)
    assert result["principalId"] == "buffr" and result["context"]["keyId"] == "buffr-2026-11"
    assert result["usageIdentifierKey"] == usage_value


def test_revoked_key_is_refused_once_the_cache_expires(aws) -> None:
    store = keys.KeyStore(boto3.client("ssm"), NAME)
    _, key = store.add("operator", key_id="op-1")
    _, other = store.add("operator", key_id="op-2")
    assert _authorize(key)["principalId"] == "operator"
    assert store.revoke("op-1")["key_id"] == "op-1"
    parameters.clear_caches()  # what AuthorizerStoreMaxAgeSeconds passing does
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _authorize(key)
    assert _authorize(other)["context"]["keyId"] == "op-2"  # the others keep working
    assert [e["key_id"] for e in store.entries()] == ["op-2"]


def test_rotate_issues_a_like_key_and_keeps_the_old_one_until_revoked(aws) -> None:
    store = keys.KeyStore(boto3.client("ssm"), NAME)
    old, old_key = store.add("buffr", usage_key="usage-value-1", key_id="buffr-old")
    new, new_key = store.rotate("buffr-old")
    assert new["key_id"] != "buffr-old" and new_key != old_key
    assert (new["principal"], new["scopes"], new["usage_key"]) == ("buffr", old["scopes"], "usage-value-1")
    assert _authorize(old_key)["context"]["keyId"] == "buffr-old"
    assert _authorize(new_key)["context"]["keyId"] == new["key_id"]


@pytest.mark.parametrize("call, message", [
    (lambda s: s.add("auditor"), "principal"),
    (lambda s: s.add("buffr", scopes=["vouchers:delete"]), "unknown scope"),
    (lambda s: s.revoke("nope"), "no key nope"),
    (lambda s: s.rotate("nope"), "no key nope"),
])
def test_refused_changes_write_nothing(aws, call, message: str) -> None:
    store = keys.KeyStore(boto3.client("ssm"), NAME)
    store.add("buffr", key_id="b1")
    before = _stored()
    with pytest.raises(keys.KeyStoreError, match=message):
        call(store)
    assert _stored() == before


def test_duplicate_key_id_is_refused(aws) -> None:
    store = keys.KeyStore(boto3.client("ssm"), NAME)
    store.add("buffr", key_id="b1")
    with pytest.raises(keys.KeyStoreError, match="already exists"):
        store.add("buffr", key_id="b1")


def test_list_view_never_shows_hashes_or_usage_values(aws) -> None:
    store = keys.KeyStore(boto3.client("ssm"), NAME)
    entry, _ = store.add("buffr", usage_key="usage-value-secretish", key_id="b1")
    view = [keys.public_view(e) for e in store.entries()]
    assert view == [{"key_id": "b1", "principal": "buffr", "scopes": ["beneficiaries:read"],
                     "created_at": entry["created_at"], "metered": True}]
    assert entry["sha256"] not in json.dumps(view) and "usage-value" not in json.dumps(view)


def test_the_keys_command_prints_the_key_once_and_never_lists_it(aws, capsys) -> None:
    from smartpay_tools.cli import app

    usage_id = boto3.client("apigateway").create_api_key(name="smartpay-buffr-prod", enabled=True)["id"]
    assert app.main(["keys", "add", "buffr-cli", "--stage", STAGE, "--principal", "buffr",
                     "--usage-key-id", usage_id]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert len(out.splitlines()) == 1 and key.startswith("sp_buffr_") and "shown this once" in err
    assert _authorize(key)["context"]["keyId"] == "buffr-cli"
    assert app.main(["keys", "list", "--stage", STAGE]) == 0
    listed = capsys.readouterr().out
    assert json.loads(listed)["key_id"] == "buffr-cli" and key not in listed and auth.hash_key(key) not in listed
    assert app.main(["keys", "rotate", "buffr-cli", "--stage", STAGE]) == 0
    rotated = capsys.readouterr().out.strip()
    assert app.main(["keys", "revoke", "buffr-cli", "--stage", STAGE]) == 0
    assert "within 60 s" in capsys.readouterr().out
    parameters.clear_caches()
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _authorize(key)
    assert _authorize(rotated)["principalId"] == "buffr"
    assert app.main(["keys", "revoke", "buffr-cli", "--stage", STAGE]) == 2  # already gone: usage error
    assert app.main(["keys", "add", "--stage", "local", "--principal", "buffr"]) == 2


class _InterleavingSsm:
    """An SSM client that runs ``before_write`` once, just before this writer's first write: the
    other operator's change lands between this writer's reads and its write."""

    def __init__(self, client, before_write) -> None:
        self._client, self._before_write = client, before_write
        self.exceptions = client.exceptions

    def __getattr__(self, name: str):
        call = getattr(self._client, name)
        if name not in {"put_parameter", "delete_parameter"} or self._before_write is None:
            return call
        hook, self._before_write = self._before_write, None

        def write(**kwargs):
            hook()
            return call(**kwargs)
        return write


def test_a_revocation_survives_a_concurrent_add(aws) -> None:
    """Operator A revokes a leaked key while operator B adds one: B's write happens after A's
    revocation but B started before it. The revoked key stays revoked; B's key is stored."""
    plain = keys.KeyStore(boto3.client("ssm"), NAME)
    _, leaked = plain.add("operator", key_id="leaked")
    _, kept = plain.add("operator", key_id="kept")
    operator_a = keys.KeyStore(boto3.client("ssm"), NAME)
    operator_b = keys.KeyStore(_InterleavingSsm(boto3.client("ssm"), lambda: operator_a.revoke("leaked")), NAME)
    _, added = operator_b.add("operator", key_id="added")
    assert [e["key_id"] for e in plain.entries()] == ["added", "kept"]
    parameters.clear_caches()
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _authorize(leaked)
    assert _authorize(kept)["context"]["keyId"] == "kept" and _authorize(added)["context"]["keyId"] == "added"


def test_an_add_survives_a_concurrent_add(aws) -> None:
    first = keys.KeyStore(boto3.client("ssm"), NAME)
    second = keys.KeyStore(_InterleavingSsm(boto3.client("ssm"), lambda: first.add("buffr", key_id="one")), NAME)
    second.add("buffr", key_id="two")
    assert [e["key_id"] for e in first.entries()] == ["one", "two"]


def test_the_store_holds_over_a_hundred_keys_and_the_authorizer_reads_them_all(aws) -> None:
    store = keys.KeyStore(boto3.client("ssm"), NAME)
    issued = [store.add("operator", key_id=f"op-{i:03d}") for i in range(120)]
    assert len(store.entries()) == 120
    parameters.clear_caches()
    for entry, key in (issued[0], issued[57], issued[119]):
        assert _authorize(key)["context"]["keyId"] == entry["key_id"]
