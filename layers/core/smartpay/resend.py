"""Before a pending voucher is sent again, ask Buffr: re-sends never rely on Buffr keeping its keys.

A voucher stays ``pending`` when Buffr's answer was lost. Sending it again under
``disburse-<voucher_id>`` credits it once only while Buffr still remembers that key, and Buffr
forgets keys after a while. So a pending voucher claimed longer ago than ``BUFFR_RESEND_GRACE_S``
(default 60 s: longer than any call's timeouts, so no earlier request is still in flight) is
looked up first (:func:`before_resend`):

* Buffr has it: its status there (active, or beyond) is recorded, and it is not sent again;
* Buffr does not have it: sent again if it may still be paid; otherwise it is settled where the
  lifecycle says (expired; cancelled for a beneficiary who may never be paid) or, when the
  lifecycle cannot take it there from pending (a suspended beneficiary's), left pending, unsent;
* no answer: not sent now (it stays pending; the next turn asks again).

A pending voucher that may not be sent (its beneficiary ineligible, or expired) is never re-sent,
even within the grace period: it waits for the lookup. A cycle run therefore always finishes.

A 400/410/422 on a voucher that was already pending, or after an attempt that timed out or
failed, may follow a lost success (Buffr forgot the key and refuses the repeat): it is looked up
too (:func:`confirm_rejections`), never marked ``failed`` on that answer alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from smartpay import buffr
from smartpay.lifecycle import VoucherStatus, unsent_target
from smartpay.observability import logger, metrics
from smartpay.settings import env_float
from smartpay.transitions import Change, TransitionResult, transition_many

BUFFR_STATUSES = frozenset({VoucherStatus.ACTIVE, VoucherStatus.REDEEMED, VoucherStatus.EXPIRED,
                            VoucherStatus.CANCELLED})


def grace_s() -> float:
    """How long after its claim a pending voucher's key is trusted to be remembered by Buffr."""
    return max(env_float("BUFFR_RESEND_GRACE_S", 60.0), 0.0)


# The pending ones of these vouchers: whether the grace period is over, whether they may be sent
# again now (expired; why the beneficiary may not be paid), and the beneficiary's status.
_PENDING = """
SELECT v.id::text, v.status_changed_at <= now() - make_interval(secs => %(grace)s) AS due,
       v.expires_at <= now() AS expired, smartpay_ineligibility(b.status, b.programme, v.programme) AS ineligible,
       b.status
  FROM vouchers v LEFT JOIN beneficiaries b ON b.id = v.beneficiary_id
 WHERE v.id = ANY(%(ids)s::uuid[]) AND v.status = 'pending'
"""


@dataclass
class Checked:
    """What :func:`before_resend` found."""

    skip: set[str] = field(default_factory=set)  # not to be sent now
    pending: set[str] = field(default_factory=set)  # already pending: a rejection may follow a lost success
    unanswered: set[str] = field(default_factory=set)  # may not be sent, and Buffr did not answer
    unpayable: dict[str, str] = field(default_factory=dict)  # may not be sent: why
    settled: list[TransitionResult] = field(default_factory=list)


def _found(voucher_id: str, result: buffr.BuffrResult) -> Change:
    seen = str(result.body.get("status") or "")
    target = VoucherStatus(seen) if seen in BUFFR_STATUSES else VoucherStatus.ACTIVE
    return Change(voucher_id, target, delivery_id=result.delivery_id,
                  detail={"looked_up": True, "buffr_status": seen, "delivery_id": result.delivery_id})


def decide(row: tuple[str, bool, bool, str | None, str | None], result: buffr.BuffrResult | None) -> tuple[
        Change | None, str]:
    """One pending voucher: (the change to record, and ``send`` | ``skip`` | ``unanswered``)."""
    voucher_id, _due, expired, ineligible, beneficiary_status = row
    sendable = not expired and ineligible is None
    if result is None:  # within the grace period: not looked up
        return None, "send" if sendable else "skip"
    if result.outcome == "found":
        return _found(voucher_id, result), "skip"
    if result.outcome != "not_found":
        return None, "skip" if sendable else "unanswered"
    if sendable:
        return None, "send"
    if expired:
        return Change(voucher_id, VoucherStatus.EXPIRED, failure_reason="expired; never received by Buffr",
                      detail={"looked_up": True, "buffr_status": None}), "skip"
    target = unsent_target(beneficiary_status)
    if target is None:
        return None, "skip"
    return Change(voucher_id, target, failure_reason=f"not sent: {ineligible}; never received by Buffr",
                  detail={"looked_up": True, "buffr_status": None, "reason": ineligible}), "skip"


def before_resend(conn: psycopg.Connection[Any], voucher_ids: Iterable[str], *, deadline: float,
                  reference: str, source: str = "disburse", pacer: buffr.Pacer | None = None) -> Checked:
    """Look up the pending vouchers among these that are past the grace period (or may not be
    sent), record what Buffr says, and say which not to send now (see the module's rules).
    ``pacer``: the sender's, so lookups and sends share its rate."""
    ids = list(voucher_ids)
    out = Checked()
    if not ids:
        return out
    rows = conn.cursor(row_factory=tuple_row).execute(_PENDING, {"ids": ids, "grace": grace_s()}).fetchall()
    if not rows:
        return out
    out.pending = {r[0] for r in rows}
    due = [r for r in rows if r[1]]
    answers = {r.voucher_id: r for r in buffr.client().status_many([r[0] for r in due], deadline=deadline,
                                                                    pacer=pacer)} if due else {}
    changes = []
    for row in rows:
        change, verdict = decide(row, answers.get(row[0]) if row[1] else None)
        if change is not None:
            changes.append(change)
        if verdict != "send":
            out.skip.add(row[0])
        if verdict == "unanswered":
            out.unanswered.add(row[0])
        if row[2] or row[3] is not None:
            out.unpayable[row[0]] = f"not sent: {row[3] or 'expired'}"
    if changes:
        out.settled = transition_many(conn, changes, source=source, reference=reference)
    if due:
        logger.info("pending vouchers looked up at Buffr before a re-send", extra={
            "looked_up": len(due), "recorded": sum(1 for t in out.settled if t.applied),
            "not_sent": len(out.skip), "unanswered": len(out.unanswered)})
        metrics.add_metric(name="PendingLookedUp", unit="Count", value=len(due))
    return out


def confirm_rejections(results: list[buffr.BuffrResult], pending: set[str], *, deadline: float,
                       pacer: buffr.Pacer | None = None) -> list[buffr.BuffrResult]:
    """Buffr's rejections that may follow a lost success (the voucher was already pending, or an
    earlier attempt of this call got no answer) replaced by what a lookup says: Buffr has it →
    accepted (its delivery id); unknown → the rejection stands; no answer → unavailable (pending)."""
    doubtful = [r for r in results if r.outcome == "rejected" and (r.attempts > 1 or r.voucher_id in pending)]
    if not doubtful:
        return results
    answers = {a.voucher_id: a for a in buffr.client().status_many([r.voucher_id for r in doubtful],
                                                                    deadline=deadline, pacer=pacer)}
    confirmed = {}
    for r in doubtful:
        a = answers[r.voucher_id]
        if a.outcome == "found":
            confirmed[r.voucher_id] = replace(r, outcome="accepted", body=a.body, status_code=a.status_code)
        elif a.outcome != "not_found":
            confirmed[r.voucher_id] = replace(r, outcome="unavailable", error=a.error or "lookup",
                                              reason=f"rejected after a lost answer, lookup failed: {r.reason}")
    logger.info("rejections after a lost answer looked up", extra={
        "doubtful": len(doubtful), "credited_at_buffr": sum(1 for c in confirmed.values() if c.outcome == "accepted")})
    return [confirmed.get(r.voucher_id, r) for r in results]
