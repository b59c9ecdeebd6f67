"""The only code that changes a voucher's status.

Every writer (disburse, webhook, reconcile, operator) calls :func:`transition` inside its own
transaction. The voucher row is locked (``SELECT … FOR UPDATE``) so two concurrent writers are
serialised; the lifecycle table decides; the update and its audit row commit together.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from smartpay.lifecycle import VoucherStatus, decide

SOURCES = frozenset({"disburse", "webhook", "reconcile", "operator"})


@dataclass(frozen=True)
class TransitionResult:
    outcome: str  # applied | duplicate | stale | not_found
    voucher_id: str
    from_status: str | None
    to_status: str
    review_reason: str | None = None

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


def transition(
    conn: psycopg.Connection[Any],
    voucher_id: str | uuid.UUID,
    target: VoucherStatus | str,
    *,
    source: str,
    reference: str | None,
    detail: dict[str, Any] | None = None,
    delivery_id: str | None = None,
    failure_reason: str | None = None,
) -> TransitionResult:
    """Move one voucher towards ``target`` if the lifecycle allows it; audit it in the same transaction."""
    if source not in SOURCES:
        raise ValueError(f"unknown transition source {source!r}")
    target = VoucherStatus(target)
    row = conn.execute(
        "SELECT status FROM vouchers WHERE id = %s FOR UPDATE", (str(voucher_id),)
    ).fetchone()
    if row is None:
        return TransitionResult("not_found", str(voucher_id), None, target.value)
    current = row["status"] if isinstance(row, dict) else row[0]
    decision = decide(current, target)
    if not decision.applies:
        return TransitionResult(decision.outcome, str(voucher_id), current, target.value)
    conn.execute(
        """UPDATE vouchers
              SET status = %(to)s,
                  status_changed_at = now(),
                  version = version + 1,
                  buffr_delivery_id = COALESCE(%(delivery)s, buffr_delivery_id),
                  failure_reason = COALESCE(%(failure)s, failure_reason),
                  review_reason = COALESCE(%(review)s, review_reason)
            WHERE id = %(id)s""",
        {
            "to": target.value,
            "delivery": delivery_id,
            "failure": failure_reason,
            "review": decision.review_reason,
            "id": str(voucher_id),
        },
    )
    audit_detail = dict(detail or {})
    if decision.review_reason:
        audit_detail["review_reason"] = decision.review_reason
    conn.execute(
        """INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference, detail)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (
            str(voucher_id),
            current,
            target.value,
            source,
            reference,
            json.dumps(audit_detail) if audit_detail else None,
        ),
    )
    return TransitionResult("applied", str(voucher_id), current, target.value, decision.review_reason)


def record_issue(
    conn: psycopg.Connection[Any], voucher_id: str | uuid.UUID, *, source: str, reference: str | None
) -> None:
    """The audit row for a voucher's creation (from ``None`` to ``issued``)."""
    conn.execute(
        """INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference)
           VALUES (%s, NULL, 'issued', %s, %s)""",
        (str(voucher_id), source, reference),
    )
