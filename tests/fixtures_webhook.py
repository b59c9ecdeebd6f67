"""Fixtures for the webhook slice.

* ``webhook_secrets``: the local signing secrets from env.local.json (current first, then old).
* ``webhook``: the webhook function in-process, warm, on moto DynamoDB (``mock_aws``) and the test
  database as its own role (``smartpay_webhook``); ``webhook.deliver(payload, ...)`` signs and delivers one event and returns its reply.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

IDEMPOTENCY_TABLE = "smartpay-idempotency-test"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


@dataclass
class InProcessWebhook:
    handler: Any
    secrets: str

    def deliver(self, body: dict[str, Any] | str | bytes, *, secrets: str | None = None,
                webhook_id: str | None = None, timestamp: int | None = None,
                headers: dict[str, str] | None = None, signed: bool = True) -> Reply:
        from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, signed_headers
        from smartpay_tools.local.events import api_event
        from smartpay_tools.local.lambda_runtime import FakeLambdaContext

        raw = encode(body)
        h = signed_headers(secrets or self.secrets, raw, webhook_id=webhook_id, timestamp=timestamp) \
            if signed else {"content-type": "application/json"}
        h.update(headers or {})
        event = api_event("POST", WEBHOOK_PATH, headers=h, body=raw)
        context = FakeLambdaContext("smartpay-webhook-test", 512, str(uuid.uuid4()), time.time() * 1000 + 15000)
        result = self.handler.lambda_handler(event, context)
        headers = {k: v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()}
        headers.update(result.get("headers") or {})
        return Reply(result["statusCode"], headers, json.loads(result["body"] or "{}"))


@pytest.fixture(scope="session")
def webhook_secrets() -> str:
    from smartpay_tools.local import envfile

    return envfile.load()["WebhookFunction"]["WEBHOOK_SECRET"]


@pytest.fixture()
def webhook(db_env: str, aws_env: None, clean_db: str, webhook_secrets: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessWebhook]:
    import boto3
    from moto import mock_aws

    from smartpay import db, idempotency
    from smartpay_tools.local.services import url_as

    monkeypatch.setenv("DATABASE_URL", url_as(db_env, "smartpay_webhook"))  # the function's own role
    db.close_pool()
    monkeypatch.setenv("WEBHOOK_SECRET", webhook_secrets)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", IDEMPOTENCY_TABLE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "webhook")
    idempotency._layers.clear()
    idempotency._configs.clear()
    with mock_aws():
        boto3.client("dynamodb").create_table(
            TableName=IDEMPOTENCY_TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
        from webhook import handler

        yield InProcessWebhook(handler, webhook_secrets)
    idempotency._layers.clear()
    idempotency._configs.clear()


@pytest.fixture()
def fresh_idempotency(local_stack: Any) -> None:
    """Empty the local stack's idempotency table(s): saved examples reuse webhook ids across tests."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=local_stack.moto.endpoint, region_name=local_stack.region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for table in local_stack.template.tables():
        for page in client.get_paginator("scan").paginate(TableName=table.name, ProjectionExpression="id"):
            for item in page["Items"]:
                client.delete_item(TableName=table.name, Key={"id": item["id"]})
