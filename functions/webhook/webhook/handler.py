"""Buffr's webhook endpoint: verify the raw body → parse → apply once → reply.

The route is open at API Gateway (``Auth: NONE``): Buffr authenticates by signature, checked
here before the body is even parsed.
"""


import base64

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from smartpay.api import api_handler, json_reply, make_resolver
from smartpay.observability import metrics
from webhook import service
from webhook.models import WebhookReply, parse_body

MAX_BODY_BYTES = 256 * 1024
PATH = "/api/v1/webhooks/buffr"

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


@app.post(PATH, summary="Receive a signed voucher status event from Buffr (Standard Webhooks)",
          description="Signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature); "
                      "idempotent per Idempotency-Key, else webhook-id. The body is {type, timestamp, data}: "
                      "the event type may be named `event` instead of `type` (Buffr's integration guide), "
                      "and `timestamp` may be left out (the signed webhook-timestamp says when it was sent). "
                      "Unknown event types are ignored (200); an unknown voucher is 404.",
          responses={401: SIGNATURE_REFUSED})
def receive() -> Response[WebhookReply]:
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
