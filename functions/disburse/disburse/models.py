"""Request and reply models at the edge of the disburse API (pydantic, extra fields refused)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from smartpay.jsontypes import JSON_INT_MAX, Count, DateTime

Programme = Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,32}$")]
Cycle = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
MAX_BATCH_IDS = 1000


class IssueRequest(BaseModel):
    """One voucher for one beneficiary's programme cycle. Money is integer cents, never a float."""

    model_config = ConfigDict(defer_build=True, extra="forbid", str_strip_whitespace=True)

    beneficiary_id: uuid.UUID
    amount_cents: StrictInt = Field(gt=0, le=JSON_INT_MAX, description="Integer cents (NAD) as a JSON integer (140000.0 is refused), "
                                                      "at most the programme's maximum "
                                                      "(reference data; above it: 422)")
    currency: Literal["NAD"]
    programme: Programme = Field(description="A programme code Ketchup runs (reference data; unknown: 422)")
    cycle: Cycle = Field(description="YYYY-MM")
    expires_at: DateTime = Field(description="RFC 3339 date-time with an offset; must be in the future "
                                                  "(in the past or now: 422)")

    @model_validator(mode="after")
    def _expiry_in_future(self) -> IssueRequest:
        if self.expires_at <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return self


class BatchRequest(BaseModel):
    """Voucher ids to re-send (≤ 1,000): reconciliation's re-send, the one batch outside the queue."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    voucher_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH_IDS)


class AuditEntry(BaseModel):
    model_config = ConfigDict(defer_build=True)

    from_status: str | None
    to_status: str
    source: str
    reference: str | None
    detail: dict[str, Any] | None
    at: datetime


# Named for the resource, not "VoucherView": the document's schema name is the class name, and a
# schema-reading client (Schemathesis' stateful phase, docs/api.md) matches every `voucher_id`
# parameter to the schema named Voucher.
class Voucher(BaseModel):
    """A voucher: status, amounts, delivery id and (from GET) its audit history."""

    model_config = ConfigDict(defer_build=True)

    voucher_id: uuid.UUID
    beneficiary_id: uuid.UUID
    programme: str
    cycle: str
    amount_cents: Count
    currency: str
    status: str
    delivery_id: str | None
    failure_reason: str | None
    review_reason: str | None
    issued_at: datetime
    expires_at: datetime
    status_changed_at: datetime
    version: Count
    history: list[AuditEntry] | None = None


class BatchItem(BaseModel):
    model_config = ConfigDict(defer_build=True)

    voucher_id: str
    outcome: Literal["active", "failed", "pending", "skipped", "not_found", "ineligible"] = Field(
        description="ineligible: not sent, the beneficiary may not be paid (reason); the voucher is held "
                    "(suspended) or cancelled (deceased, not enrolled) — or stays pending, not re-sent")
    status: str | None
    delivery_id: str | None = None
    reason: str | None = None
    attempts: Count = 0


class BatchReply(BaseModel):
    model_config = ConfigDict(defer_build=True)

    requested: Count
    attempted: Count
    succeeded: Count
    failed: Count
    pending: Count
    ineligible: Count = Field(description="not sent: the beneficiary is not eligible (each listed with its reason)")
    skipped: Count
    stopped_early: bool
    not_attempted: list[str]
    results: list[BatchItem]
