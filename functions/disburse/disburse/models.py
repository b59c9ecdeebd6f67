"""Request and reply models at the edge of the disburse API (pydantic, extra fields refused)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StringConstraints,
    Tag,
    model_validator,
)

from smartpay.jsontypes import JSON_INT_MAX, Count, DateTime

Programme = Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,32}$")]
Cycle = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
MAX_BATCH_IDS = 1000
MAX_BATCH_LIMIT = 10_000


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
    """Either explicit voucher ids (≤ 1,000) or a programme cycle with a limit (≤ 10,000)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", str_strip_whitespace=True)

    voucher_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_IDS)
    programme: Programme | None = None
    cycle: Cycle | None = None
    limit: int = Field(default=1000, ge=1, le=MAX_BATCH_LIMIT)

    @model_validator(mode="after")
    def _one_selector(self) -> BatchRequest:
        by_cycle = self.programme is not None or self.cycle is not None
        if self.voucher_ids is not None and by_cycle:
            raise ValueError("give either voucher_ids or programme and cycle, not both")
        if self.voucher_ids is None and (self.programme is None or self.cycle is None):
            raise ValueError("give voucher_ids, or both programme and cycle")
        return self


class BatchByIds(BaseModel):
    """Explicit voucher ids, sent in the order given (repeats count once)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", title="BatchByVoucherIds")

    voucher_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH_IDS)
    limit: int = Field(default=1000, ge=1, le=MAX_BATCH_LIMIT, description="Not used with voucher_ids")

    def selection(self) -> BatchRequest:
        return BatchRequest(voucher_ids=self.voucher_ids, limit=self.limit)


class BatchByCycle(BaseModel):
    """A programme cycle: its issued and pending vouchers, at most ``limit`` per call (resumable)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", str_strip_whitespace=True, title="BatchByProgrammeCycle")

    programme: Programme
    cycle: Cycle = Field(description="YYYY-MM")
    limit: int = Field(default=1000, ge=1, le=MAX_BATCH_LIMIT)

    def selection(self) -> BatchRequest:
        return BatchRequest(programme=self.programme, cycle=self.cycle, limit=self.limit)


def _batch_shape(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "ids" if isinstance(value, BatchByIds) else "cycle"
    return "ids" if isinstance(value, dict) and "voucher_ids" in value else "cycle"


#: The batch body at the API edge: exactly one of the two shapes (``oneOf`` in the document).
BatchSelector = Annotated[Annotated[BatchByIds, Tag("ids")] | Annotated[BatchByCycle, Tag("cycle")],
                          Discriminator(_batch_shape)]


class Disbursed(BaseModel):
    """A voucher Buffr accepted (the same again, with ``Idempotent-Replayed: true``, on a repeat)."""

    model_config = ConfigDict(defer_build=True)

    voucher_id: uuid.UUID
    status: Literal["active"]
    delivery_id: str
    attempts: Count = Field(description="Calls to Buffr it took (a replay repeats the first answer)")


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
    remaining: Count | None = Field(default=None, description="left to pay in the programme cycle: issued, and held or pending of beneficiaries eligible now")
    results: list[BatchItem]
