"""Reply models of the cycle-run API and the SQS message body (pydantic, extra fields refused)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from smartpay.jsontypes import Count

RunStatus = Literal["awaiting_approval", "approved", "enqueuing", "running", "paused", "completed", "expired",
                    "cancelled"]


class RegionTotal(BaseModel):
    model_config = ConfigDict(defer_build=True)

    region: str
    vouchers: Count
    amount_cents: Count


class EligibilityExceptions(BaseModel):
    """Issued vouchers of the cycle that the run leaves out (never sent), by reason."""

    model_config = ConfigDict(defer_build=True)

    total: Count = 0
    by_reason: dict[str, Count] = Field(default_factory=dict)
    voucher_ids: list[uuid.UUID] = Field(default_factory=list, description="The first 100, by id")


class Party(BaseModel):
    model_config = ConfigDict(defer_build=True)

    principal: str
    key_id: str


class Progress(BaseModel):
    """Where the run's vouchers are now (their status in the one lifecycle table)."""

    model_config = ConfigDict(defer_build=True)

    total: Count
    queued: Count = Field(description="still issued: not sent yet")
    sent: Count = Field(description="handed to Buffr at least once (pending, active or beyond)")
    pending: Count = Field(description="sent, Buffr's answer not yet recorded (retried)")
    active: Count = Field(description="accepted by Buffr (active, redeemed)")
    failed: Count
    held: Count = Field(description="held back at payment time (beneficiary not eligible then)")
    other: Count = Field(description="cancelled or expired before they were sent")
    chunks: dict[str, Count] = Field(description="messages by state: planned, sending, enqueued, done, parked")
    receives: Count = Field(description="SQS deliveries of the run's messages (a redelivery is a retry)")
    buffr_calls: Count = Field(description="requests made to Buffr for the run (first attempts and retries)")
    retries: Count = Field(description="Buffr attempts beyond each call's first")
    errors: dict[str, Count] = Field(description="calls that did not go through, by class")
    rate_per_s: float = Field(description="vouchers sent per second over the last minute")
    eta_s: float | None = Field(description="queued + pending at that rate; null when nothing is moving")


class CycleRun(BaseModel):
    model_config = ConfigDict(defer_build=True)

    run_id: uuid.UUID
    kind: Literal["cycle", "supplementary"] = Field(
        "cycle", description="cycle: the cycle's issued vouchers; supplementary: the selection it was prepared with")
    programme: str
    cycle: str
    status: RunStatus
    voucher_count: Count
    total_amount_cents: Count
    region_totals: list[RegionTotal]
    exceptions: EligibilityExceptions
    fingerprint: str
    maker: Party
    checker: Party | None = None
    prepared_at: datetime
    expires_at: datetime
    approved_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None


class EnqueueMessage(BaseModel):
    """One SQS message: enqueue the rest of a run's chunks (handed over by approve or resume)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    run_id: uuid.UUID
    enqueue: Literal[True]


Fingerprint = Field(pattern=r"^[0-9a-f]{64}$", description="The run's fingerprint, as the checker saw it")


class ApproveRequest(BaseModel):
    """What the checker reviewed: approval applies to exactly this run and fingerprint (else 409)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    run_id: uuid.UUID
    fingerprint: str = Fingerprint


def _absent_or_given(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # absent means not chosen; null is not a value


def _only_true(schema: dict[str, Any]) -> None:
    _absent_or_given(schema)
    schema["const"] = True


class SupplementaryRequest(BaseModel):
    """A supplementary run's selection: explicit voucher ids (issued or held vouchers of the cycle),
    or the cycle's held vouchers whose beneficiary is eligible again. Exactly one of the two."""

    # The document says what the validator checks: exactly one key, neither null, the flag only true.
    model_config = ConfigDict(defer_build=True, extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["voucher_ids"]}, {"required": ["held_eligible_again"]}]})

    voucher_ids: list[uuid.UUID] = Field(None, min_length=1, max_length=1000, json_schema_extra=_absent_or_given)
    held_eligible_again: StrictBool = Field(None, json_schema_extra=_only_true)

    @model_validator(mode="after")
    def _one_selection(self) -> SupplementaryRequest:
        if self.held_eligible_again is False or (self.voucher_ids is not None) == bool(self.held_eligible_again):
            raise ValueError("give exactly one of voucher_ids or held_eligible_again: true")
        return self

    def selection(self) -> dict[str, object]:
        if self.voucher_ids is not None:
            return {"voucher_ids": sorted({str(v) for v in self.voucher_ids})}
        return {"held_eligible_again": True}


class ChunkMessage(BaseModel):
    """One SQS message: a chunk of a run's vouchers and the chunk's current token."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    run_id: uuid.UUID
    chunk_no: int = Field(ge=0)
    token: uuid.UUID
    voucher_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
