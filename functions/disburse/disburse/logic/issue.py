"""Issue one voucher, at most once per caller's Idempotency-Key (rules: :mod:`smartpay.issuance`)."""

from __future__ import annotations

from typing import Any

from disburse import repository
from disburse.logic.read import view
from disburse.models import IssueRequest
from smartpay import db, idempotency, issuance
from smartpay.errors import Conflict, Unprocessable
from smartpay.observability import count_idempotent_request, logger, metrics


def issue(request: IssueRequest, idempotency_key: str | None, *, reference: str, context: Any) -> tuple[
        dict[str, Any], bool]:
    """Issue one voucher, at most once per caller's Idempotency-Key. Returns (voucher, replayed)."""

    def _issue(data: dict[str, Any]) -> dict[str, Any]:
        return _issue_voucher(IssueRequest.model_validate(data["request"]), reference)

    result, replayed = idempotency.run("issue", _issue, data={"idempotency_key": idempotency_key,
                                                              "request": request.model_dump(mode="json")},
                                       context=context, event_key_jmespath="idempotency_key",
                                       payload_validation_jmespath="request")
    count_idempotent_request("issue", replayed=replayed)
    return result, replayed


_REJECTION_TITLES = {"beneficiary_id": "Beneficiary not eligible", "programme": "Not enrolled in programme",
                     "amount_cents": "Amount above the programme maximum"}


def _issue_voucher(request: IssueRequest, reference: str) -> dict[str, Any]:
    """The rules are :mod:`smartpay.issuance`'s (the payroll import applies the same ones)."""
    beneficiary_id = str(request.beneficiary_id)
    with db.transaction() as conn:
        outcome = issuance.issue_one(conn, beneficiary_id=beneficiary_id, programme=request.programme,
                                     cycle=request.cycle, amount_cents=request.amount_cents,
                                     currency=request.currency, expires_at=request.expires_at, reference=reference)
        row = repository.get(conn, outcome.voucher_id) if outcome.outcome == "issued" else None
    if outcome.outcome == "rejected":
        field, reason = outcome.field or "", outcome.reason or ""
        title = (f"Unknown {field.removesuffix('_id')}" if reason.startswith("unknown ")
                 else _REJECTION_TITLES.get(field, "Voucher not issued"))
        raise Unprocessable(f"No voucher issued for beneficiary {beneficiary_id}: {outcome.reason}.", title=title,
                            errors=[{"location": f"body.{outcome.field}", "message": outcome.reason}])
    if outcome.outcome == "exists":
        raise Conflict(f"Beneficiary {beneficiary_id} already has voucher {outcome.voucher_id} for "
                       f"{request.programme} {request.cycle}.", title="Voucher already issued",
                       extra={"voucher_id": outcome.voucher_id, "voucher_status": outcome.existing_status})
    logger.info("voucher issued", extra={"voucher_id": outcome.voucher_id, "programme": request.programme,
                                         "cycle": request.cycle})
    metrics.add_metric(name="VouchersIssued", unit="Count", value=1)
    return view(row).model_dump(mode="json")

