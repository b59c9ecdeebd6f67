"""Request and reply models at the edge of the beneficiaries API (pydantic)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from smartpay.jsontypes import Count

IdNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{11}$")]
Msisdn = Annotated[str, StringConstraints(pattern=r"^\+?264[0-9]{8,9}$")]


class VerifyRequest(BaseModel):
    """What Buffr knows about the person in front of it. The ID number travels in the body only."""

    model_config = ConfigDict(defer_build=True, extra="forbid", str_strip_whitespace=True)

    id_number: IdNumber = Field(description="National ID number, 11 digits")
    full_name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")] | None = Field(
        default=None, description="Not blank (surrounding whitespace is ignored)")
    msisdn: Msisdn | None = Field(default=None, description="Phone number, +264…")
    voucher_id: uuid.UUID | None = None


class VoucherSummary(BaseModel):
    model_config = ConfigDict(defer_build=True)

    voucher_id: uuid.UUID
    programme: str
    cycle: str
    amount_cents: Count
    currency: str
    status: str
    expires_at: str


class MaskedBeneficiary(BaseModel):
    model_config = ConfigDict(defer_build=True)

    beneficiary_id: uuid.UUID
    id_number: str = Field(description="Masked: last 4 digits only")
    name: str = Field(description="Masked: initials only")
    msisdn: str = Field(description="Masked: country code and last 4 digits")
    region: str
    programme: str
    status: Literal["active", "suspended", "deceased"]
    eligible: bool


# Named for the resource, as the disburse API's Voucher is: a `beneficiary_id` anywhere in the
# document (issuing's body, this path) is matched to the schema named Beneficiary.
class Beneficiary(MaskedBeneficiary):
    """A beneficiary's masked profile and open vouchers."""

    open_vouchers: list[VoucherSummary]


class Verification(BaseModel):
    """Every supplied field matched: the masked profile."""

    model_config = ConfigDict(defer_build=True)

    match: Literal[True] = True
    checks: dict[str, bool] = Field(description="The supplied fields (all matched)")
    beneficiary: Beneficiary


class NoMatch(BaseModel):
    """Some supplied field did not match (or no such ID number): nothing else, so the endpoint
    cannot be used to walk ID numbers and learn who holds them or which field was wrong."""

    model_config = ConfigDict(defer_build=True)

    match: Literal[False] = False


VerifyReply = Verification | NoMatch
