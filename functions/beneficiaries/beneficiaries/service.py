"""Verification rules: match only when every supplied field matches; eligible only when active.

Minimal disclosure: unless every supplied field matches, the reply is ``{"match": false}`` and
nothing else — no profile, no vouchers, no per-field results (docs/api.md).
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from beneficiaries import repository
from beneficiaries.models import (
    Beneficiary,
    NoMatch,
    Verification,
    VerifyReply,
    VerifyRequest,
    VoucherSummary,
)
from smartpay.errors import NotFound
from smartpay.masking import mask_id_number, mask_msisdn, mask_name


def _normalise_name(value: str) -> str:
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return " ".join(folded.lower().replace("-", " ").split())


def _normalise_msisdn(value: str) -> str:
    return value if value.startswith("+") else "+" + value


def _view(row: dict[str, Any]) -> Beneficiary:
    vouchers = repository.open_vouchers(str(row["id"]))
    return Beneficiary(
        beneficiary_id=row["id"],
        id_number=mask_id_number(row["id_number"]) or "",
        name=mask_name(f"{row['first_name']} {row['last_name']}") or "",
        msisdn=mask_msisdn(row["msisdn"]) or "",
        region=row["region"],
        programme=row["programme"],
        status=row["status"],
        eligible=row["status"] == "active",
        open_vouchers=[
            VoucherSummary(
                voucher_id=v["id"],
                programme=v["programme"],
                cycle=v["cycle"],
                amount_cents=v["amount_cents"],
                currency=v["currency"],
                status=v["status"],
                expires_at=v["expires_at"].isoformat(),
            )
            for v in vouchers
        ],
    )


def get(beneficiary_id: uuid.UUID) -> Beneficiary:
    row = repository.by_id(str(beneficiary_id))
    if row is None:
        raise NotFound(f"No beneficiary with id {beneficiary_id}.")
    return _view(row)


def verify(request: VerifyRequest) -> VerifyReply:
    row = repository.by_id_number(request.id_number)
    if row is None:
        return NoMatch()
    checks = {"id_number": True}
    if request.full_name is not None:
        checks["full_name"] = _normalise_name(request.full_name) == _normalise_name(
            f"{row['first_name']} {row['last_name']}"
        )
    if request.msisdn is not None:
        checks["msisdn"] = _normalise_msisdn(request.msisdn) == row["msisdn"]
    if not all(checks.values()):
        return NoMatch()
    view = _view(row)
    if request.voucher_id is not None:
        checks["voucher_id"] = any(v.voucher_id == request.voucher_id for v in view.open_vouchers)
        if not checks["voucher_id"]:
            return NoMatch()
    return Verification(checks=checks, beneficiary=view)
