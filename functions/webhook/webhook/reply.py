"""What the webhook route answers Buffr, declared by the route itself, so loaded at init.

The body's models (:mod:`webhook.models`) load with the service, on the first request or, with
SnapStart, by the priming hook before the snapshot (handler.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WebhookReply(BaseModel):
    """What Ketchup answers Buffr (the same again, with ``Idempotent-Replayed: true``, on a repeat)."""

    model_config = ConfigDict(defer_build=True)

    webhook_id: str
    type: str
    outcome: Literal["applied", "duplicate", "stale", "ignored"]
    voucher_id: str | None = None
    status: str | None = Field(default=None, description="The voucher's status after this event")
    review_reason: str | None = Field(default=None, description="Set when the change is flagged for review")
