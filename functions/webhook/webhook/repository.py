"""Data access for the webhook function: the delivery log (``webhook_events``).

Status changes go through :func:`smartpay.transitions.transition` only; everything here runs
inside the caller's transaction so the log row commits with the change it describes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg


def record(conn: psycopg.Connection[Any], *, webhook_id: str, idempotency_key: str, type_: str | None,
           voucher_id: str | None, delivery_id: str | None, payload: dict[str, Any],
           occurred_at: datetime | None, outcome: str, reason: str | None) -> None:
    """Log one delivery; a repeat of a no-change outcome for the same webhook id is not logged twice.

    Returns nothing, so in a pipelined transaction the INSERT travels with the COMMIT.
    """
    conn.execute(
        """INSERT INTO webhook_events (webhook_id, idempotency_key, type, voucher_id, delivery_id, payload,
                                       occurred_at, outcome, reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (webhook_id, outcome) WHERE outcome <> 'applied' DO NOTHING""",
        (webhook_id, idempotency_key, type_, voucher_id, delivery_id, json.dumps(payload), occurred_at,
         outcome, reason),
    )

