"""Events one function sends another by a direct Lambda invocation, typed at both ends.

Reconciliation re-sends vouchers through the disburse function (the one place that builds the
Buffr request and its ``disburse-<voucher_id>`` key; reconcile's role cannot read ID numbers):
:class:`Redisburse` goes out, :class:`RedisburseReply` comes back. No API Gateway event is
fabricated and no authorizer context is forged.

Who may send it is decided outside the payload: deployed, only the reconcile function's role has
``lambda:InvokeFunction`` on the disburse function (its ``LambdaInvokePolicy`` in template.yaml;
API Gateway reaches disburse only as a proxy event, which always carries ``requestContext``);
locally, the runner's Lambda endpoint enforces the same template policies per calling function
(each function is given its own endpoint URL, as each deployed function has its own role).
The disburse function then checks the payload: exactly this shape, with ``source: "reconcile"``.
See docs/reconciliation.md#re-sending-through-disburse.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_VOUCHERS = 1000


class Redisburse(BaseModel):
    """Reconcile → disburse: send these vouchers (pending and unknown at Buffr) again, same key."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    kind: Literal["redisburse"] = "redisburse"
    source: Literal["reconcile"] = "reconcile"
    run_id: uuid.UUID
    voucher_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_VOUCHERS)


class RedisburseResult(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")

    voucher_id: uuid.UUID
    outcome: str
    status: str | None = None
    reason: str | None = None


class RedisburseReply(BaseModel):
    """Disburse → reconcile: one result per voucher it was asked to send."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    kind: Literal["redisburse"] = "redisburse"
    results: list[RedisburseResult]


def is_direct(event: Any) -> bool:
    """An event that did not come through API Gateway (every proxy event has ``requestContext``)."""
    return isinstance(event, dict) and "requestContext" not in event and "httpMethod" not in event
