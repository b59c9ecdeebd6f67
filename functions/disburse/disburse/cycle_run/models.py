"""Reply models of the cycle-run API and the SQS message body (pydantic, extra fields refused)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, Tag, field_validator

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


Fingerprint = Field(pattern=r"^[0-9a-f]{64}$", description="The run's fingerprint, as the checker saw it")


class ApproveRequest(BaseModel):
    """What the checker reviewed: approval applies to exactly this run and fingerprint (else 409)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    run_id: uuid.UUID
    fingerprint: str = Fingerprint


class SupplementaryByIds(BaseModel):
    """Named vouchers of the cycle (issued or held), in any order (repeats count once)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", title="SupplementaryByVoucherIds")

    voucher_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)

    def selection(self) -> dict[str, Any]:
        return {"voucher_ids": sorted({str(v) for v in self.voucher_ids})}


class SupplementaryHeld(BaseModel):
    """The cycle's held vouchers whose beneficiary is eligible again."""

    model_config = ConfigDict(defer_build=True, extra="forbid", title="SupplementaryHeldEligibleAgain")

    held_eligible_again: StrictBool = Field(json_schema_extra={"const": True})

    @field_validator("held_eligible_again")
    @classmethod
    def _true(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("must be true")
        return value

    def selection(self) -> dict[str, Any]:
        return {"held_eligible_again": True}


def _supplementary_shape(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "ids" if isinstance(value, SupplementaryByIds) else "held"
    return "ids" if isinstance(value, dict) and "voucher_ids" in value else "held"


#: A supplementary run's selection: exactly one of the two shapes (``oneOf`` in the document).
SupplementaryRequest = Annotated[Annotated[SupplementaryByIds, Tag("ids")] | Annotated[SupplementaryHeld, Tag("held")],
                                 Discriminator(_supplementary_shape)]


class EnqueueMessage(BaseModel):
    """One SQS message: enqueue the rest of a run's chunks (handed over by approve or resume)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    run_id: uuid.UUID
    enqueue: Literal[True]


class ChunkMessage(BaseModel):
    """One SQS message: a chunk of a run's vouchers and the chunk's current token."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    run_id: uuid.UUID
    chunk_no: int = Field(ge=0)
    token: uuid.UUID
    voucher_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
