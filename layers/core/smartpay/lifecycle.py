"""The voucher state machine (docs/architecture.md#voucher-lifecycle): one table that every writer uses.

    issued ─▶ pending ─▶ active ─▶ redeemed
       │         │          ├────▶ expired
       │         └─▶ failed └────▶ cancelled
       └──────────────────────────▶ cancelled / expired

A writer may move a voucher to any state *reachable* along these edges (a lost ``activated``
webhook must not stop a later ``redeemed`` from applying), never backwards. The one exception
is Buffr's word on money: ``redeemed`` beats a local ``expired`` and is flagged for review.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import NamedTuple


class VoucherStatus(StrEnum):
    ISSUED = "issued"
    PENDING = "pending"
    ACTIVE = "active"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"


S = VoucherStatus

#: The lifecycle's edges. Everything else is derived from this one table.
EDGES: dict[VoucherStatus, frozenset[VoucherStatus]] = {
    S.ISSUED: frozenset({S.PENDING, S.CANCELLED, S.EXPIRED}),
    S.PENDING: frozenset({S.ACTIVE, S.FAILED}),
    S.ACTIVE: frozenset({S.REDEEMED, S.EXPIRED, S.CANCELLED}),
    S.REDEEMED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}

#: Overrides allowed out of a terminal state because Buffr is the source of truth for money.
#: Each is applied but flagged for a person to review, with this reason.
OVERRIDES: dict[tuple[VoucherStatus, VoucherStatus], str] = {
    (S.EXPIRED, S.REDEEMED): "redeemed at Buffr after it expired at Ketchup",
}

TERMINAL: frozenset[VoucherStatus] = frozenset(s for s, nxt in EDGES.items() if not nxt)
OPEN: frozenset[VoucherStatus] = frozenset(S) - TERMINAL


@cache
def reachable(start: VoucherStatus) -> frozenset[VoucherStatus]:
    """Every status reachable from ``start`` by one or more forward edges."""
    seen: set[VoucherStatus] = set()
    frontier = list(EDGES[start])
    while frontier:
        status = frontier.pop()
        if status not in seen:
            seen.add(status)
            frontier.extend(EDGES[status])
    return frozenset(seen)


@cache
def depth(status: VoucherStatus) -> int:
    """How far along the lifecycle a status is (issued 0 … terminal 3)."""
    return max((depth(prev) + 1 for prev, nxt in EDGES.items() if status in nxt), default=0)


class Decision(NamedTuple):
    """What a writer must do: ``apply`` (with an optional review flag), or record why not."""

    outcome: str  # "applied" | "duplicate" | "stale"
    review_reason: str | None = None

    @property
    def applies(self) -> bool:
        return self.outcome == "applied"


def decide(current: VoucherStatus | str, target: VoucherStatus | str) -> Decision:
    """Decide a transition. Never raises for a well-formed status: stale/duplicate are outcomes."""
    current, target = VoucherStatus(current), VoucherStatus(target)
    if current == target:
        return Decision("duplicate")
    if target in reachable(current):
        return Decision("applied")
    if (current, target) in OVERRIDES:
        return Decision("applied", OVERRIDES[(current, target)])
    return Decision("stale")


def can_move(current: VoucherStatus | str, target: VoucherStatus | str) -> bool:
    return decide(current, target).applies


@cache
def decision_table() -> tuple[tuple[str, str, str, str | None], ...]:
    """Every (current, target) pair with its decision: :func:`decide` spelled out for SQL.

    :mod:`smartpay.transitions` hands it to PostgreSQL, so a batch of transitions is decided
    in the same statement that locks and updates the rows — by this table, not a copy of it.
    """
    return tuple((c.value, t.value, *decide(c, t)) for c in VoucherStatus for t in VoucherStatus)
