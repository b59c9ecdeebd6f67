"""Webhook receipt: authenticate, deduplicate, apply once (docs/architecture.md: voucher-lifecycle, idempotency, webhook-signatures).

Two lines of defence against a repeated delivery: Powertools idempotency (DynamoDB), keyed by
the signed ``webhook-id``, answers a repeat with the first reply and never reaches PostgreSQL;
behind it the state machine's row lock makes a late or doubled event a ``duplicate`` or
``stale`` no-op. An ``Idempotency-Key`` header is not signed, so it never decides dedupe (a
captured delivery replayed with a key of the replayer's choosing is still the same delivery);
it is kept in the webhook log for tracing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from smartpay import db, idempotency, signing
from smartpay.api import header
from smartpay.errors import NotFound, Unauthenticated
from smartpay.observability import count_idempotent_request, logger, metrics
from smartpay.settings import secret
from smartpay.transitions import TransitionResult, transition
from webhook import repository
from webhook.models import KINDS, Envelope, EventData, RedeemedData, event_type

IDEMPOTENCY_NAME = "webhook"
KEY_HEADERS = ("idempotency-key", "x-idempotency-key")
OUTCOME_METRICS = {
    "applied": "WebhookApplied",
    "duplicate": "WebhookDuplicate",
    "stale": "WebhookStale",
    "ignored": "WebhookIgnored",
    "rejected": "WebhookRejected",
}


def authenticate(raw: bytes, headers: Mapping[str, str]) -> str:
    """The delivery's ``webhook-id`` if its signature verifies; otherwise a 401 and one log line."""
    try:
        return signing.verify(secret("WEBHOOK_SECRET"), raw, headers)
    except signing.SignatureError as exc:
        claimed = (header(headers, "webhook-id") or "")[:200]
        logger.warning("webhook signature rejected", extra={"reason": str(exc), "webhook_id": claimed})
        metrics.add_metric(name="WebhookSignatureRejected", unit="Count", value=1)
        raise Unauthenticated("The webhook signature is missing, invalid or outside the allowed time window.",
                              title="Invalid webhook signature") from None


def receive(webhook_id: str, payload: dict[str, Any], envelope: Envelope, headers: Mapping[str, str],
            context: Any) -> tuple[dict[str, Any], bool]:
    """Apply one verified delivery at most once per signed webhook-id; returns (reply, replayed)."""
    metrics.add_metric(name="WebhookReceived", unit="Count", value=1)
    occurred = envelope.data.get("occurred_at") if isinstance(envelope.data, dict) else None
    _latency(occurred, envelope.timestamp or _signed_at(headers))
    key = (header(headers, *KEY_HEADERS) or webhook_id)[:200]  # the sender's key: traced, never the dedupe key
    logger.append_keys(webhook_id=webhook_id, voucher_id=_uuid_or_none(envelope.data.get("voucher_id")))
    try:
        reply, replayed = idempotency.run(
            IDEMPOTENCY_NAME, apply, data={"key": key, "webhook_id": webhook_id, "payload": payload},
            context=context, event_key_jmespath="webhook_id", payload_validation_jmespath="payload",
        )
    except NotFound:
        metrics.add_metric(name=OUTCOME_METRICS["rejected"], unit="Count", value=1)
        raise
    count_idempotent_request(IDEMPOTENCY_NAME, replayed=replayed)
    if not replayed:
        metrics.add_metric(name=OUTCOME_METRICS[reply["outcome"]], unit="Count", value=1)
        if reply.get("review_reason"):
            metrics.add_metric(name="WebhookFlaggedForReview", unit="Count", value=1)
    return reply, replayed


def apply(data: dict[str, Any]) -> dict[str, Any]:
    """The business step, run once per webhook-id: status change, audit row and log row in one transaction.

    An unknown voucher is logged as ``rejected`` and answered 404 *after* the commit, so the
    idempotency record is dropped and a later retry (or an operator's replay) can still apply.
    """
    payload, webhook_id, key = data["payload"], data["webhook_id"], data["key"]
    type_ = event_type(payload)
    kind = KINDS.get(type_)
    log = {"webhook_id": webhook_id, "idempotency_key": key, "type_": type_, "payload": payload}
    with db.transaction(pipelined=True) as conn:  # 2 round trips: BEGIN + lock, then writes + COMMIT
        if kind is None:
            voucher_id = _uuid_or_none(payload.get("data", {}).get("voucher_id"))
            repository.record(conn, **log, voucher_id=voucher_id, delivery_id=None, occurred_at=None,
                              outcome="ignored", reason=f"unknown event type {type_[:100]!r}")
            logger.info("webhook ignored", extra={"type": type_[:100]})
            return _reply(webhook_id, type_, "ignored", voucher_id, None)
        event: EventData = kind.model.model_validate(payload["data"])
        voucher_id = str(event.voucher_id)
        result = transition(
            conn, voucher_id, kind.target, source="webhook", reference=webhook_id,
            detail=_detail(type_, event), delivery_id=event.delivery_id,
            failure_reason=getattr(event, "reason", None) if kind.target == "failed" else None,
            amount_cents=event.amount_cents if isinstance(event, RedeemedData) else None,
        )
        outcome = "rejected" if result.outcome == "not_found" else result.outcome
        reason = _reason(result, event)
        repository.record(conn, **log, voucher_id=voucher_id, delivery_id=event.delivery_id,
                          occurred_at=event.occurred_at, outcome=outcome, reason=reason)
    logger.info(f"webhook {outcome}", extra={"type": type_, "from_status": result.from_status,
                                              "to_status": result.to_status, "reason": reason})
    if outcome == "rejected":
        raise NotFound(f"No voucher with id {voucher_id}.", title="Unknown voucher",
                       extra={"webhook_id": webhook_id, "outcome": "rejected"})
    status = result.to_status if result.applied else result.from_status
    return _reply(webhook_id, type_, outcome, voucher_id, status, result.review_reason)


def _reason(result: TransitionResult, event: EventData) -> str | None:
    """The log row's reason. A redemption of another amount than the voucher's is applied and
    flagged for review by the transition itself (review_reason and its audit row)."""
    if result.outcome == "not_found":
        return "unknown voucher"
    if result.outcome == "stale":
        return f"voucher is already {result.from_status}"
    mismatch = next((part for part in (result.review_reason or "").split("; ") if part.startswith("amount mismatch")),
                    None)
    if result.applied and mismatch:
        metrics.add_metric(name="WebhookAmountMismatch", unit="Count", value=1)
        logger.warning("redeemed amount differs from the voucher",
                       extra={"reported_amount_cents": getattr(event, "amount_cents", None)})
        return mismatch
    return None


def _detail(type_: str, event: EventData) -> dict[str, Any]:
    detail = event.model_dump(mode="json", exclude={"voucher_id"}, exclude_none=True)
    return {"type": type_, **detail}


def _reply(webhook_id: str, type_: str, outcome: str, voucher_id: str | None, status: str | None,
           review_reason: str | None = None) -> dict[str, Any]:
    reply = {"webhook_id": webhook_id, "type": type_, "outcome": outcome, "voucher_id": voucher_id,
             "status": status}
    if review_reason:
        reply["review_reason"] = review_reason
    return reply


def _uuid_or_none(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value is not None else None
    except ValueError:
        return None


def _signed_at(headers: Mapping[str, str]) -> datetime | None:
    """The signed ``webhook-timestamp`` (already checked by :func:`authenticate`)."""
    try:
        return datetime.fromtimestamp(int(header(headers, "webhook-timestamp") or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _latency(occurred: Any, emitted: datetime | None) -> None:
    """Delivery latency: the event's own time (``occurred_at``, else the envelope's) → receipt."""
    try:
        at = datetime.fromisoformat(occurred) if isinstance(occurred, str) else emitted
    except ValueError:
        at = emitted
    if at is None or at.tzinfo is None:
        return
    ms = (datetime.now(UTC) - at).total_seconds() * 1000
    metrics.add_metric(name="WebhookDeliveryLatency", unit="Milliseconds", value=max(ms, 0.0))
