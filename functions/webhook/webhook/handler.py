"""Buffr's webhook endpoint: verify the raw body → parse → apply once → reply.

The route is open at API Gateway (``Auth: NONE``): Buffr authenticates by signature, checked
here before the body is even parsed.

The init loads only what the route declares (its reply); the service and the body's models load
with the first request, or, with SnapStart, in the priming hook before the snapshot
(:data:`FIRST_REQUEST`), so a restored copy finds them loaded.
"""


import base64
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from smartpay import coldstart, snapstart
from smartpay.api import api_handler, json_reply, make_resolver
from smartpay.observability import metrics
from webhook.reply import WebhookReply

MAX_BODY_BYTES = 256 * 1024
PATH = "/api/v1/webhooks/buffr"
#: What the route imports when it runs: primed before a SnapStart snapshot.
FIRST_REQUEST = ("webhook.service", "webhook.models")

app = make_resolver()


def _raw_body() -> bytes:
    event = app.current_event
    body = event.body or ""
    return base64.b64decode(body) if event.is_base64_encoded else body.encode("utf-8")


# No @tracer.capture_method here: it would log a traceback for every forged or malformed request;
# the handler's segment covers the invocation.
SIGNATURE_REFUSED = {
    "description": "Missing, invalid or stale Standard Webhooks signature (nothing is stored)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _header(name: str, description: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


def openapi_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """What the resolver cannot show, because this handler reads it by hand, signature first (so an
    unsigned request is a 401 before anything is parsed): the signature headers and the body.
    tools' OpenAPI builder adds these to the operation. A function, not a module constant: the
    JSON Schemas of the body's models are built for the API document, never at a cold start."""
    from smartpay import signing
    from webhook.models import documented_body

    return {("post", PATH): {
        "parameters": [
            _header("webhook-id", "Unique per event; signed, the idempotency key",
                    {"type": "string", "pattern": signing._WEBHOOK_ID.pattern}),
            _header("webhook-timestamp", f"Unix seconds; within {signing.TOLERANCE_SECONDS} s of Ketchup's clock",
                    {"type": "string", "pattern": signing._TIMESTAMP.pattern}),
            _header("webhook-signature", "Space-separated v1,<base64 HMAC-SHA256> of id.timestamp.body",
                    {"type": "string", "minLength": 1}),
            _header("Idempotency-Key", "Optional, recorded for tracing only: not signed, so deduplication "
                    "keys on webhook-id", {"type": "string"}, required=False),
        ],
        "requestBody": documented_body(),
    }}


@app.post(PATH, summary="Receive a signed voucher status event from Buffr (Standard Webhooks)",
          description="Signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature); "
                      "idempotent per signed webhook-id (the same id with another body is a 422). The body is {type, timestamp, data}: "
                      "the event type may be named `event` instead of `type` (Buffr's integration guide), "
                      "and `timestamp` may be left out (the signed webhook-timestamp says when it was sent). "
                      "Unknown event types are ignored (200); an unknown voucher is 404.",
          responses={200: {"description": "Received: applied, a duplicate, stale or ignored (the same again, with "
                                          "Idempotent-Replayed: true, for a repeated key)",
                           "content": {"application/json": {"model": WebhookReply}}},
                     401: SIGNATURE_REFUSED})
def receive() -> Response[WebhookReply]:
    from webhook import service
    from webhook.models import parse_body

    raw = _raw_body()
    headers = app.current_event.headers  # Powertools' case-insensitive dict
    webhook_id = service.authenticate(raw, headers)
    try:
        payload, envelope = parse_body(raw)
    except RequestValidationError:
        metrics.add_metric(name="WebhookMalformed", unit="Count", value=1)
        raise
    reply, replayed = service.receive(webhook_id, payload, envelope, headers, app.lambda_context)
    return json_reply(200, reply, replayed=replayed)


lambda_handler = api_handler(app, max_body_bytes=MAX_BODY_BYTES)


# SnapStart: primed before the snapshot, connections and secrets renewed after each restore.
snapstart.register(snapstart.prime_idempotency("webhook"),
                   snapstart.prime_modules(*FIRST_REQUEST, "aws_lambda_powertools.utilities.parameters", "psycopg_pool"))
coldstart.end()  # the init is over: freeze what it loaded, collector back on (smartpay.coldstart)
