"""The voucher state machine (docs/architecture.md#voucher-lifecycle): one table that every writer uses.

    issued ───────────▶ pending ─▶ active ─▶ redeemed
      │ │                ▲  │          ├───▶ expired
      │ └─▶ held ────────┘  └─▶ failed └───▶ cancelled
      │       └────────────────────────────▶ cancelled / expired
      └────────────────────────────────────▶ cancelled / expired

A writer may move a voucher to any state *reachable* along these edges (a lost ``activated``
webhook must not stop a later ``redeemed`` from applying), never backwards. The one exception
is Buffr's word on money: ``redeemed`` beats a local ``expired`` and is flagged for review.

``held``: the beneficiary was suspended when the voucher was due to be paid. Nothing was sent
to Buffr; once reinstated, the next disburse moves it on to ``pending`` and pays it normally.
Held is entered only from ``issued`` (a voucher that may already be at Buffr is never held),
so the lifecycle stays forward-only. A permanently ineligible beneficiary (deceased, or no
longer enrolled in the voucher's programme) has the voucher ``cancelled`` for good
(:data:`WHEN_INELIGIBLE`).

The database enforces the same table: migrations render :func:`decision_table` into
``voucher_lifecycle`` (see :mod:`smartpay.migrate`) and a trigger on ``vouchers`` refuses any
status change it does not allow.
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
    HELD = "held"


S = VoucherStatus

#: The lifecycle's edges. Everything else is derived from this one table.
EDGES: dict[VoucherStatus, frozenset[VoucherStatus]] = {
    S.ISSUED: frozenset({S.PENDING, S.HELD, S.CANCELLED, S.EXPIRED}),
    S.HELD: frozenset({S.PENDING, S.CANCELLED, S.EXPIRED}),
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
    """How far along the lifecycle a status is (issued 0, held 1, pending 2 … terminal 4)."""
    return max((depth(prev) + 1 for prev, nxt in EDGES.items() if status in nxt), default=0)


#: Where a voucher goes when its beneficiary is not eligible at payment time (by the
#: beneficiary's registry status; anything else permanently ineligible — deceased, not enrolled
#: in the voucher's programme — cancels it). Only an ``issued`` or ``held`` voucher can move so;
#: one already ``pending`` may be at Buffr and is never re-sent while ineligible.
WHEN_INELIGIBLE: dict[str, VoucherStatus] = {"suspended": S.HELD}
INELIGIBLE_OTHERWISE: VoucherStatus = S.CANCELLED
#: Never sent to Buffr: only these are held or cancelled for ineligibility. Any later status may
#: be at Buffr (pending: sent, answer unknown), which has no cancel call: those are flagged.
BEFORE_BUFFR: frozenset[VoucherStatus] = frozenset({S.ISSUED, S.HELD})


def ineligible_target(beneficiary_status: str) -> VoucherStatus:
    return WHEN_INELIGIBLE.get(beneficiary_status, INELIGIBLE_OTHERWISE)


def unsent_target(beneficiary_status: str | None) -> VoucherStatus | None:
    """Where a ``pending`` voucher goes when Buffr says it never received it and its beneficiary
    may not be paid (:mod:`smartpay.resend` asks): :func:`ineligible_target` if the lifecycle can
    go there from pending (forward only: cancelled), else nowhere — a suspended beneficiary's
    voucher cannot be held again, so it stays pending, unsent, and is looked up again before any
    later re-send."""
    target = ineligible_target(beneficiary_status or "")
    return target if can_move(S.PENDING, target) else None


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


def allowed_pairs() -> tuple[tuple[str, str], ...]:
    """The (from, to) status changes a writer may make: what the ``vouchers`` trigger allows."""
    return tuple((c, t) for c, t, outcome, _ in decision_table() if outcome == "applied")
