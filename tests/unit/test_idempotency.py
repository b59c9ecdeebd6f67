"""Regression tests for the Powertools idempotency behaviour SmartPay relies on (moto DynamoDB)."""

import json
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws

from smartpay import idempotency
from smartpay.errors import Conflict, ProblemError, ServiceUnavailable, Unprocessable
from smartpay_tools.local.lambda_runtime import FakeLambdaContext

TABLE = "idempotency-test"


@pytest.fixture()
def store(aws_env, monkeypatch):
    monkeypatch.setenv("IDEMPOTENCY_TABLE", TABLE)
    idempotency._layers.clear()
    idempotency._configs.clear()
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        yield client
    idempotency._layers.clear()
    idempotency._configs.clear()


def ctx() -> FakeLambdaContext:
    return FakeLambdaContext("fn", 512, "r", time.time() * 1000 + 29000)


def _run(func, data: dict[str, Any]) -> tuple[dict, bool]:
    return idempotency.run("test", func, data=data, context=ctx(), event_key_jmespath="key",
                           payload_validation_jmespath="body")


def test_second_call_is_a_replay_and_does_not_run_again(store) -> None:
    calls = []

    def work(data: dict) -> dict:
        calls.append(data)
        return {"n": len(calls)}

    first = _run(work, {"key": "k1", "body": {"a": 1}})
    second = _run(work, {"key": "k1", "body": {"a": 1}})
    assert first == ({"n": 1}, False)
    assert second == ({"n": 1}, True)
    assert len(calls) == 1


def test_record_outlives_buffrs_retry_horizon(store) -> None:
    _run(lambda data: {"ok": True}, {"key": "k2", "body": {}})
    item = store.scan(TableName=TABLE)["Items"][0]
    ttl = int(item["expiration"]["N"]) - time.time()
    assert ttl > 3 * 24 * 3600
    assert item["id"]["S"].startswith("local#test#")


def test_same_key_other_payload_is_422(store) -> None:
    _run(lambda data: {"ok": True}, {"key": "k3", "body": {"amount": 1}})
    with pytest.raises(Unprocessable):
        _run(lambda data: {"ok": True}, {"key": "k3", "body": {"amount": 2}})


def test_missing_key_is_400(store) -> None:
    with pytest.raises(ProblemError) as err:
        _run(lambda data: {"ok": True}, {"key": None, "body": {}})
    assert err.value.status == 400


def test_in_progress_is_409_with_retry_after(store) -> None:
    seen: list[Any] = []

    def outer(data: dict) -> dict:
        try:
            _run(lambda d: {"inner": True}, {"key": "k4", "body": {}})
        except Conflict as exc:
            seen.append(exc)
        return {"outer": True}

    _run(outer, {"key": "k4", "body": {}})
    assert seen and seen[0].status == 409 and seen[0].headers["Retry-After"]


def test_failed_call_is_not_cached(store) -> None:
    attempts = []

    def flaky(data: dict) -> dict:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        return {"ok": True}

    with pytest.raises(RuntimeError):
        _run(flaky, {"key": "k5", "body": {}})
    assert _run(flaky, {"key": "k5", "body": {}}) == ({"ok": True}, False)


def test_unreachable_store_is_503(aws_env, monkeypatch) -> None:
    monkeypatch.setenv("IDEMPOTENCY_TABLE", TABLE)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")
    idempotency._layers.clear()
    idempotency._configs.clear()
    try:
        with pytest.raises(ServiceUnavailable):
            _run(lambda data: {"ok": True}, {"key": "k6", "body": {}})
    finally:
        idempotency._layers.clear()
        idempotency._configs.clear()


@pytest.mark.parametrize("headers, expected", [
    ({"Idempotency-Key": "a"}, "a"), ({"IDEMPOTENCY-KEY": "b"}, "b"), ({"x-idempotency-key": "c"}, "c"),
    ({"idempotency-key": "  "}, None), ({}, None),
])
def test_header_lookup_ignores_case(headers, expected) -> None:
    from smartpay.api import header

    assert header(headers, "idempotency-key", "x-idempotency-key") == expected


def test_completed_record_is_one_whole_item_put(store) -> None:
    """save_success writes the whole completed record (PutItem), exactly what a replay reads back."""
    calls: list[str] = []
    idempotency.persistence_layer("test").client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.append(model.name))
    _run(lambda data: {"ok": 1}, {"key": "k9", "body": {"a": 1}})
    assert calls == ["PutItem", "PutItem"]  # in progress (conditional), then completed
    item = store.scan(TableName=TABLE)["Items"][0]
    assert set(item) == {"id", "expiration", "status", "data", "validation"}
    assert item["status"]["S"] == "COMPLETED" and json.loads(item["data"]["S"]) == {"ok": 1}
    assert _run(lambda data: {"ok": 2}, {"key": "k9", "body": {"a": 1}}) == ({"ok": 1}, True)
    with pytest.raises(Unprocessable):
        _run(lambda data: {"ok": 3}, {"key": "k9", "body": {"a": 2}})
