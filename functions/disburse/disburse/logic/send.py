"""Send one voucher to Buffr, at most once per voucher id whatever the caller sends."""

from __future__ import annotations

from typing import Any

from disburse import repository
from disburse.logic.batch import SOURCE, apply, call_deadline, count_outcomes, log_items, refused_item
from disburse.models import BatchItem
from smartpay import buffr, db, idempotency
from smartpay.errors import Conflict, NotFound, ProblemError, ServiceUnavailable, Unprocessable
from smartpay.lifecycle import VoucherStatus
from smartpay.observability import count_idempotent_request
from smartpay.transitions import transition

#: Statuses a disburse call may (re-)send: issued and held are claimed (→ pending) if the
#: beneficiary is eligible; pending is re-sent under the same idempotency key.
SENDABLE = frozenset({VoucherStatus.ISSUED, VoucherStatus.HELD, VoucherStatus.PENDING})


def disburse(voucher_id: str, *, reference: str, context: Any) -> tuple[dict[str, Any], bool]:
    """Send one voucher to Buffr, at most once per voucher id whatever the caller sends."""

    def _disburse(data: dict[str, Any]) -> dict[str, Any]:
        return _disburse_voucher(data["voucher_id"], reference, call_deadline(context))

    result, replayed = idempotency.run("disburse", _disburse, data={"voucher_id": voucher_id}, context=context,
                                       event_key_jmespath="voucher_id")
    count_idempotent_request("disburse", replayed=replayed)
    return result, replayed


def _disburse_voucher(voucher_id: str, reference: str, deadline: float) -> dict[str, Any]:
    with db.transaction() as conn:
        row = repository.lock_for_disburse(conn, voucher_id)
        if row is None:
            raise NotFound(f"No voucher with id {voucher_id}.")
        if row["status"] not in SENDABLE:
            raise Conflict(f"Voucher {voucher_id} is already {row['status']}; it is not sent again.",
                           title="Voucher already disbursed",
                           extra={"voucher_id": voucher_id, "voucher_status": row["status"]})
        # issued/held → pending (a pending one is re-sent as it is), decided on the beneficiary's
        # eligibility in the same statement: an ineligible one is held or cancelled instead.
        claim = transition(conn, voucher_id, VoucherStatus.PENDING, source=SOURCE, reference=reference)
    if claim.ineligible is not None:  # committed above: the voucher records why (audit row)
        item = refused_item(claim)
        count_outcomes([item])
        log_items([item], [None])
        raise Conflict(f"Voucher {voucher_id} was not sent to Buffr: {claim.ineligible}.",
                       title="Beneficiary not eligible",
                       extra={"voucher_id": voucher_id, "voucher_status": item.status, "reason": claim.ineligible})
    request = buffr.DisburseRequest(voucher_id, int(row["amount_cents"]), row["currency"], row["id_number"])
    result = buffr.client().disburse(request, deadline=deadline)
    with db.transaction() as conn:
        item = apply(conn, [result], reference)[0]
    count_outcomes([item])
    if item.outcome == "active":
        return {"voucher_id": voucher_id, "status": "active", "delivery_id": item.delivery_id,
                "attempts": item.attempts}
    raise _problem(item, result)


def _problem(item: BatchItem, result: buffr.BuffrResult) -> ProblemError:
    extra = {"voucher_id": item.voucher_id, "voucher_status": item.status, "attempts": item.attempts}
    if item.outcome == "failed":
        return Unprocessable(f"Buffr rejected voucher {item.voucher_id}: {item.reason}", title="Rejected by Buffr",
                             extra=extra)
    detail = (f"Buffr did not accept voucher {item.voucher_id} ({result.error}); it stays pending and is "
              "finished by a retry or by reconciliation.")
    if result.error == "rate_limited":
        return ServiceUnavailable(detail, retry_after=max(1, round(result.retry_after or 5)),
                                  title="Buffr is rate limiting", extra=extra)
    if result.error in {"timeout", "deadline"}:
        return ProblemError(detail, status=504, title="Buffr timed out", extra=extra)
    return ProblemError(detail, status=502, title="Buffr unavailable", extra={**extra, "reason": result.reason})


