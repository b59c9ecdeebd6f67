"""smartpay.resend's decisions: what a pending voucher becomes after Buffr is asked, and which
rejections are looked up before a voucher is failed."""

from __future__ import annotations

from typing import Any

import pytest

from smartpay import buffr, resend
from smartpay.buffr import BuffrResult

V = "7d0f5b8e-1c1a-4a57-9a43-0c2b8f0e9c11"


def _row(*, due: bool = True, expired: bool = False, ineligible: str | None = None,
         beneficiary: str = "active") -> tuple[str, bool, bool, str | None, str]:
    return (V, due, expired, ineligible, beneficiary)


@pytest.mark.parametrize(("row", "result", "target", "verdict"), [
    (_row(due=False), None, None, "send"),  # within the grace period: Buffr still knows the key
    (_row(due=False, ineligible="beneficiary is deceased", beneficiary="deceased"), None, None, "skip"),
    (_row(), BuffrResult("found", V, 200, {"status": "active", "deliveryId": "d1"}), "active", "skip"),
    (_row(), BuffrResult("found", V, 200, {"status": "redeemed", "deliveryId": "d1"}), "redeemed", "skip"),
    (_row(), BuffrResult("not_found", V, 404), None, "send"),
    (_row(), BuffrResult("unavailable", V, error="timeout"), None, "skip"),
    (_row(expired=True), BuffrResult("not_found", V, 404), "expired", "skip"),
    (_row(ineligible="beneficiary is deceased", beneficiary="deceased"), BuffrResult("not_found", V, 404),
     "cancelled", "skip"),
    (_row(ineligible="beneficiary is suspended", beneficiary="suspended"), BuffrResult("not_found", V, 404),
     None, "skip"),  # held is not reachable from pending: it stays pending, unsent
    (_row(ineligible="beneficiary is deceased", beneficiary="deceased"), BuffrResult("unavailable", V),
     None, "unanswered"),
])
def test_what_a_pending_voucher_becomes(row: Any, result: Any, target: str | None, verdict: str) -> None:
    change, said = resend.decide(row, result)
    assert said == verdict
    assert (change.target if change else None) == target


class _Lookups:
    def __init__(self, answers: dict[str, BuffrResult]) -> None:
        self.answers, self.asked = answers, []

    def status_many(self, ids: list[str], *, deadline: float, pacer: Any = None) -> list[BuffrResult]:
        self.asked.extend(ids)
        return [self.answers[i] for i in ids]


def test_only_rejections_that_may_follow_a_lost_success_are_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    first, retried, resent, gone = "a" * 8, "b" * 8, "c" * 8, "d" * 8
    lookups = _Lookups({retried: BuffrResult("found", retried, 200, {"status": "active", "deliveryId": "d2"}),
                        resent: BuffrResult("unavailable", resent, error="timeout"),
                        gone: BuffrResult("not_found", gone, 404)})
    monkeypatch.setattr(buffr, "client", lambda: lookups)
    results = [BuffrResult("rejected", first, 422, attempts=1),     # a first answer: it stands
               BuffrResult("rejected", retried, 422, attempts=2),   # after an attempt with no answer
               BuffrResult("rejected", resent, 410, attempts=1),    # the voucher was pending already
               BuffrResult("rejected", gone, 400, attempts=1)]
    out = resend.confirm_rejections(results, {resent, gone}, deadline=0.0)
    assert lookups.asked == [retried, resent, gone]
    assert [r.outcome for r in out] == ["rejected", "accepted", "unavailable", "rejected"]
    assert out[1].delivery_id == "d2"
