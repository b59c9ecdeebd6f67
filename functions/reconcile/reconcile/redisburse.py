"""Re-send vouchers pending and unknown at Buffr, through the disburse function.

Reconciliation never reads ID numbers (its database role cannot), and the Buffr request and
its idempotency key are built in one place only: the disburse function. So a re-send is a
direct, synchronous invocation of that function's batch route (``POST /api/v1/disbursements``
with the voucher ids), authorised by IAM (``lambda:InvokeFunction`` on that one function) and
carrying the ``reconcile`` principal with the ``vouchers:write`` scope. Buffr deduplicates by
the same ``disburse-<voucher_id>`` key, so a voucher that did reach Buffr is never credited twice.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from smartpay.observability import logger
from smartpay.settings import env_str

BATCH_PATH = "/api/v1/disbursements"
MAX_IDS_PER_CALL = 1000
_client: Any = None


def _lambda() -> Any:
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("lambda")
    return _client


def _event(voucher_ids: list[str], run_id: str) -> dict[str, Any]:
    """The API Gateway proxy event the disburse function's resolver expects."""
    request_id = f"reconcile-{run_id}-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    return {
        "resource": BATCH_PATH, "path": BATCH_PATH, "httpMethod": "POST",
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {"content-type": ["application/json"]},
        "queryStringParameters": None, "multiValueQueryStringParameters": None, "pathParameters": None,
        "stageVariables": None, "isBase64Encoded": False,
        "body": json.dumps({"voucher_ids": voucher_ids}),
        "requestContext": {
            "resourcePath": BATCH_PATH, "httpMethod": "POST", "path": BATCH_PATH, "requestId": request_id,
            "requestTimeEpoch": int(now.timestamp() * 1000), "stage": "internal",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "smartpay-reconcile"},
            "authorizer": {"principalId": "reconcile", "principal": "reconcile", "keyId": "reconcile-invoke",
                           "scopes": "vouchers:write"},
        },
    }


def redisburse(voucher_ids: list[str], *, run_id: str) -> dict[str, dict[str, Any]]:
    """Per voucher id: ``{"ok": bool, "outcome": "active"|"pending"|"failed"|…, "reason": …}``."""
    name = env_str("DISBURSE_FUNCTION_NAME", "")
    if not name:
        return {v: {"ok": False, "reason": "DISBURSE_FUNCTION_NAME is not configured"} for v in voucher_ids}
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(voucher_ids), MAX_IDS_PER_CALL):
        chunk = voucher_ids[start:start + MAX_IDS_PER_CALL]
        started = time.monotonic()
        try:
            reply = _lambda().invoke(FunctionName=name, InvocationType="RequestResponse",
                                     Payload=json.dumps(_event(chunk, run_id)).encode())
            payload = json.loads(reply["Payload"].read() or b"{}")
        except Exception as exc:  # the voucher stays pending and flagged: nothing is lost
            logger.warning("re-disbursement call failed", extra={"error": type(exc).__name__, "count": len(chunk)})
            out.update({v: {"ok": False, "reason": f"invoke failed: {type(exc).__name__}: {exc}"[:300]}
                        for v in chunk})
            continue
        if reply.get("FunctionError") or payload.get("statusCode") != 200:
            reason = (payload.get("errorMessage") or payload.get("body") or str(payload))[:300]
            out.update({v: {"ok": False, "reason": f"disburse refused: {reason}"} for v in chunk})
            continue
        results = {str(r["voucher_id"]): r for r in json.loads(payload["body"]).get("results", [])}
        for v in chunk:
            r = results.get(v, {})
            # "ineligible": disburse did not send it (the beneficiary may not be paid): flagged here.
            out[v] = {"ok": bool(r) and r.get("outcome") != "ineligible", "outcome": r.get("outcome"),
                      "status": r.get("status"),
                      "reason": r.get("reason") or (None if r else "not in disburse's reply")}
        logger.info("re-disbursed", extra={"count": len(chunk), "ms": int((time.monotonic() - started) * 1000)})
    return out
