"""The reconciliation table: Ketchup's view of a voucher vs Buffr's → a class and an action.

docs/architecture.md#voucher-lifecycle, docs/reconciliation.md and :mod:`smartpay.lifecycle` decide; nothing here changes state. Buffr ahead of
Ketchup (a forward edge of the lifecycle) is healed; everything else that differs is flagged for
a person. Buffr is the source of truth for money, so ``redeemed`` there beats ``expired`` here
(the lifecycle's override: applied *and* flagged), while ``redeemed`` here vs ``expired`` there
only flags.

==========================  ===========================================  ===========
Ketchup                     Buffr                                        class → action
==========================  ===========================================  ===========
any                         no answer (timeouts, 5xx after retries)      ``unavailable`` → none
issued / held / failed      unknown                                      match (never sent / rejected)
cancelled, never sent       unknown                                      match (e.g. beneficiary deceased)
pending, younger than grace unknown                                      ``pending_in_grace`` → none
pending, older than grace   unknown                                      ``pending_unknown`` → flag (or re-disburse)
active / terminal           unknown                                      ``unknown_at_buffr`` → flag
any                         another amount                               ``amount_mismatch`` → flag
any                         a status we do not know                      ``unrecognised_status`` → flag
same status                 same amount                                  match
expired                     redeemed                                     ``redeemed_vs_expired`` → heal + flag
redeemed                    expired                                      ``redeemed_vs_expired`` → flag
S                           T reachable from S                           ``buffr_ahead`` → heal to T
S                           T with S reachable from T                    ``ketchup_ahead`` → flag
S                           T, neither reachable (e.g. cancelled/redeem) ``status_conflict`` → flag
==========================  ===========================================  ===========
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from smartpay.lifecycle import OVERRIDES, VoucherStatus, decide, reachable

S = VoucherStatus

#: Every class a record can carry (None = match). Reports and metrics list them in this order.
CLASSES = ("buffr_ahead", "ketchup_ahead", "unknown_at_buffr", "amount_mismatch", "redeemed_vs_expired",
           "status_conflict", "pending_unknown", "pending_in_grace", "unrecognised_status", "unavailable")

#: Buffr's words for our statuses (the guide's ``delivered`` is our ``active``).
BUFFR_ALIASES = {"delivered": "active"}


@dataclass(frozen=True)
class Verdict:
    """One voucher's comparison. ``plan``: none | heal | flag | heal_flag | redisburse_or_flag."""

    match: bool
    discrepancy: str | None
    plan: str
    buffr_status: str | None = None
    buffr_amount_cents: int | None = None
    buffr_delivery_id: str | None = None
    target: str | None = None
    detail: str | None = None


def _amount(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def classify(voucher: dict[str, Any], outcome: str, body: dict[str, Any], *, now: datetime,
             grace: timedelta, error: str | None = None) -> Verdict:
    """Compare one voucher row (status, amount_cents, status_changed_at) with Buffr's answer.

    ``outcome`` is the Buffr client's: ``found`` (``body`` is Buffr's view), ``not_found`` or
    ``unavailable`` (``error`` says why).
    """
    ours = S(voucher["status"])
    if outcome == "unavailable":
        return Verdict(False, "unavailable", "none", detail=f"Buffr did not answer ({error or 'unknown'})")
    if outcome == "not_found":
        if ours in (S.ISSUED, S.HELD, S.FAILED):
            return Verdict(True, None, "none")
        if ours == S.CANCELLED and not voucher.get("buffr_delivery_id"):
            return Verdict(True, None, "none")  # cancelled before it was ever sent (ineligible)
        if ours == S.PENDING:
            age = now - voucher["status_changed_at"]
            if age < grace:
                return Verdict(False, "pending_in_grace", "none",
                               detail=f"pending for {int(age.total_seconds())} s; Buffr may not have it yet")
            return Verdict(False, "pending_unknown", "redisburse_or_flag",
                           detail=f"pending for {int(age.total_seconds())} s and unknown at Buffr")
        return Verdict(False, "unknown_at_buffr", "flag", detail=f"{ours} here, unknown at Buffr")
    raw = str(body.get("status") or "").strip().lower()
    theirs_text = BUFFR_ALIASES.get(raw, raw)
    amount = _amount(body.get("amount", body.get("amount_cents")))
    delivery = body.get("deliveryId") or body.get("delivery_id")
    seen = {"buffr_status": raw or None, "buffr_amount_cents": amount,
            "buffr_delivery_id": str(delivery) if delivery else None}
    try:
        theirs = S(theirs_text)
    except ValueError:
        return Verdict(False, "unrecognised_status", "flag", **seen, detail=f"Buffr status {raw!r} is not one we know")
    if amount != int(voucher["amount_cents"]):
        return Verdict(False, "amount_mismatch", "flag", **seen,
                       detail=f"{voucher['amount_cents']} cents here, {amount} at Buffr")
    if theirs == ours:
        return Verdict(True, None, "none", **seen)
    if {ours, theirs} == {S.EXPIRED, S.REDEEMED}:
        if (ours, theirs) in OVERRIDES and decide(ours, theirs).applies:
            return Verdict(False, "redeemed_vs_expired", "heal_flag", **seen, target=theirs.value,
                           detail=OVERRIDES[(ours, theirs)] + "; Buffr is the source of truth for money")
        return Verdict(False, "redeemed_vs_expired", "flag", **seen, detail=f"{ours} here, {theirs} at Buffr")
    if decide(ours, theirs).applies:
        return Verdict(False, "buffr_ahead", "heal", **seen, target=theirs.value, detail=f"{ours} here, {theirs} at Buffr")
    if ours in reachable(theirs):
        return Verdict(False, "ketchup_ahead", "flag", **seen, detail=f"{ours} here, only {theirs} at Buffr")
    return Verdict(False, "status_conflict", "flag", **seen, detail=f"{ours} here, {theirs} at Buffr")
