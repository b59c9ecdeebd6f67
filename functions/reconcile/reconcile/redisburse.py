"""Re-send vouchers pending and unknown at Buffr, through the disburse function.

Reconciliation never reads ID numbers (its database role cannot), and the Buffr request and its
idempotency key are built in one place only: the disburse function. So a re-send is a direct,
synchronous invocation of that function with the typed internal event
:class:`smartpay.internal.Redisburse` (not an API Gateway event), authorised by IAM
(``lambda:InvokeFunction`` on that one function, docs/reconciliation.md#re-sending-through-disburse).
Buffr deduplicates by the same ``disburse-<voucher_id>`` key while it keeps that key; the disburse
function does not rely on it: a pending voucher claimed longer ago than its grace period is looked
up at Buffr again right before the re-send, and a rejection of the re-send is looked up before the
voucher is failed (:mod:`smartpay.resend`), so a voucher that did reach Buffr is never credited twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from smartpay.internal import MAX_VOUCHERS, Redisburse, RedisburseReply
from smartpay.observability import logger
from smartpay.settings import env_str

_client: Any = None


def _lambda() -> Any:
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("lambda")
    return _client


def redisburse(voucher_ids: list[str], *, run_id: str) -> dict[str, dict[str, Any]]:
    """Per voucher id: ``{"ok": bool, "outcome": "active"|"pending"|"failed"|…, "reason": …}``."""
    name = env_str("DISBURSE_FUNCTION_NAME", "")
    if not name:
        return {v: {"ok": False, "reason": "DISBURSE_FUNCTION_NAME is not configured"} for v in voucher_ids}
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(voucher_ids), MAX_VOUCHERS):
        chunk = voucher_ids[start:start + MAX_VOUCHERS]
        started = time.monotonic()
        event = Redisburse(run_id=run_id, voucher_ids=chunk)
        try:
            reply = _lambda().invoke(FunctionName=name, InvocationType="RequestResponse",
                                     Payload=event.model_dump_json().encode())
            payload = json.loads(reply["Payload"].read() or b"{}")
        except Exception as exc:  # the voucher stays pending and flagged: nothing is lost
            logger.warning("re-disbursement call failed", extra={"error": type(exc).__name__, "count": len(chunk)})
            out.update({v: {"ok": False, "reason": f"invoke failed: {type(exc).__name__}: {exc}"[:300]}
                        for v in chunk})
            continue
        try:
            if reply.get("FunctionError"):
                raise ValueError(payload.get("errorMessage") or str(payload))
            results = {str(r.voucher_id): r for r in RedisburseReply.model_validate(payload).results}
        except (ValueError, ValidationError) as exc:
            reason = str(exc)[:300]
            out.update({v: {"ok": False, "reason": f"disburse refused: {reason}"} for v in chunk})
            continue
        for v in chunk:
            r = results.get(v)
            # "ineligible", or "not sent: …" (not part of a run under way, expired): disburse did not
            # send it; flagged here.
            sent = r.outcome != "ineligible" and not (r.reason or "").startswith("not sent")
            out[v] = ({"ok": sent, "outcome": r.outcome, "status": r.status, "reason": r.reason}
                      if r else {"ok": False, "outcome": None, "status": None, "reason": "not in disburse's reply"})
        logger.info("re-disbursed", extra={"count": len(chunk), "ms": int((time.monotonic() - started) * 1000)})
    return out
