"""What a reconciliation invocation accepts (manual events) and returns (pydantic, strict)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_VOUCHER_IDS = 10_000
CYCLE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


class ReconcileRequest(BaseModel):
    """A manual invocation (the scheduled EventBridge event maps to ``mode="incremental"``).

    ``mode``: ``incremental`` — open vouchers plus those changed since the last completed run of
    this shard split (or ``since``); ``full`` — open vouchers plus those changed within the full
    window (``RECONCILE_FULL_WINDOW_DAYS``, or ``since``). ``voucher_ids`` — exactly those vouchers
    (mode ``vouchers``). An unfinished run of the same ``shard``/``shards``/``dry_run`` is resumed
    first, whatever the mode asked for.
    """

    model_config = ConfigDict(defer_build=True, extra="forbid")

    mode: Literal["incremental", "full", "vouchers"] = "incremental"
    since: datetime | None = Field(default=None, description="window start (ISO-8601 with a zone)")
    voucher_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=MAX_VOUCHER_IDS)
    shard: int = Field(default=0, ge=0)
    shards: int = Field(default=1, ge=1, le=256)
    dry_run: bool = False
    redisburse_pending: bool = Field(default=False, description="re-send vouchers pending and unknown at Buffr "
                                                                "past the grace period (same idempotency key)")
    grace_seconds: int | None = Field(default=None, ge=0, le=7 * 86400)
    page_size: int | None = Field(default=None, ge=1, le=10_000)
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    rate_per_s: float | None = Field(default=None, ge=0, description="Buffr status calls per second, 0: no limit")
    max_vouchers: int | None = Field(default=None, ge=1, description="stop this invocation after this many")

    @model_validator(mode="after")
    def _consistent(self) -> ReconcileRequest:
        if self.shard >= self.shards:
            raise ValueError(f"shard must be in 0..shards-1 (got shard {self.shard} of {self.shards})")
        if self.voucher_ids is not None:
            if self.mode == "incremental":
                self.mode = "vouchers"
            if self.mode != "vouchers":
                raise ValueError("voucher_ids go with mode 'vouchers' (or no mode)")
            if self.shards != 1:
                raise ValueError("voucher_ids and shards do not combine")
        elif self.mode == "vouchers":
            raise ValueError("mode 'vouchers' needs voucher_ids")
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("since needs a time zone (e.g. 2026-11-01T00:00:00Z)")
        return self


class ReportRequest(BaseModel):
    """``{"report": {...}}``: a run's report (``run_id``) or a programme cycle's (``compliance``:
    the auditor's compliance report of that cycle, docs/operations.md)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    run_id: uuid.UUID | None = None
    programme: str | None = Field(default=None, pattern=r"^[a-z_]{2,32}$")
    cycle: str | None = Field(default=None, pattern=CYCLE_PATTERN)
    compliance: bool = False

    @model_validator(mode="after")
    def _one(self) -> ReportRequest:
        if (self.run_id is None) == (self.programme is None or self.cycle is None):
            raise ValueError("give run_id, or programme and cycle")
        if self.compliance and self.run_id is not None:
            raise ValueError("compliance reports are per programme cycle: give programme and cycle, not run_id")
        return self


class ReconcileReply(BaseModel):
    model_config = ConfigDict(defer_build=True)

    run_id: uuid.UUID
    status: str
    mode: str
    resumed: bool
    dry_run: bool
    shard: int
    shards: int
    checked: int = Field(description="vouchers checked in the run so far (all its invocations)")
    matched: int
    healed: int
    flagged: int
    redisbursed: int
    unavailable: int
    remaining: int = Field(description="vouchers of this run still to check")
    invocation_checked: int
    discrepancies: dict[str, int] = Field(description="this invocation's discrepancies by class")
    stopped: str | None = Field(default=None, description="why this invocation stopped before the end")
