"""Read one voucher with its audit history."""

from __future__ import annotations

from typing import Any

from disburse import repository
from disburse.models import Voucher
from smartpay import db
from smartpay.errors import NotFound


def view(row: dict[str, Any], history: list[dict[str, Any]] | None = None) -> Voucher:
    return Voucher(voucher_id=row["id"], beneficiary_id=row["beneficiary_id"], programme=row["programme"],
                       cycle=row["cycle"], amount_cents=row["amount_cents"], currency=row["currency"],
                       status=row["status"], delivery_id=row["buffr_delivery_id"],
                       failure_reason=row["failure_reason"], review_reason=row["review_reason"],
                       issued_at=row["issued_at"], expires_at=row["expires_at"],
                       status_changed_at=row["status_changed_at"], version=row["version"], history=history)


def get(voucher_id: str) -> Voucher:
    with db.connection() as conn:
        row = repository.get(conn, voucher_id)
        if row is None:
            raise NotFound(f"No voucher with id {voucher_id}.")
        return view(row, repository.history(conn, voucher_id))

