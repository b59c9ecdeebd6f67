"""Buffr's webhook endpoint: verify the raw body → parse → apply once → reply.

The route is open at API Gateway (``Auth: NONE``): Buffr authenticates by signature, checked
here before the body is even parsed.
"""


import base64
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from smartpay.api import make_resolver, resolve
from smartpay.observability import logger, metrics, tracer
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
    headers = dict(app.current_event.headers or {})
    webhook_id = service.authenticate(raw, headers)
    try:
        payload, envelope = parse_body(raw)
    except RequestValidationError:
        metrics.add_metric(name="WebhookMalformed", unit="Count", value=1)
        raise
    reply, replayed = service.receive(webhook_id, payload, envelope, headers, app.lambda_context)
    return Response(status_code=200, content_type="application/json", body=reply,
                    headers={"Idempotent-Replayed": "true"} if replayed else None)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context, max_body_bytes=MAX_BODY_BYTES)
