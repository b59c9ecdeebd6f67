"""Disburse API: parse → service → reply. Operators only (scopes vouchers:write / vouchers:read)."""


import uuid
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from disburse import service
from disburse.models import BatchReply, BatchRequest, IssueRequest, VoucherView
from smartpay.api import make_resolver, require_scope, resolve
from smartpay.idempotency import header
from smartpay.observability import logger, metrics, tracer

MAX_BODY_BYTES = 64 * 1024

app = make_resolver()


def _request_id() -> str:
    return app.current_event.request_context.request_id


def _reply(status: int, body: dict[str, Any], replayed: bool) -> Response[dict[str, Any]]:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(status_code=status, content_type="application/json", body=body, headers=headers)


@app.post("/api/v1/vouchers", summary="Issue one voucher (Idempotency-Key header required)")
@tracer.capture_method
def issue_voucher(request: IssueRequest) -> Response[dict[str, Any]]:
    require_scope(app, "vouchers:write")
    key = header(app.current_event.headers, "Idempotency-Key", "X-Idempotency-Key")
    voucher, replayed = service.issue(request, key, reference=_request_id(), context=app.lambda_context)
    return _reply(201, voucher, replayed)


@app.post("/api/v1/vouchers/<voucher_id>/disburse", summary="Send one voucher to Buffr (once per voucher id)")
@tracer.capture_method
def disburse_voucher(voucher_id: Annotated[uuid.UUID, Path()]) -> Response[dict[str, Any]]:
    require_scope(app, "vouchers:write")
    logger.append_keys(voucher_id=str(voucher_id))
    result, replayed = service.disburse(str(voucher_id), reference=_request_id(), context=app.lambda_context)
    return _reply(200, result, replayed)


@app.post("/api/v1/disbursements", summary="Disburse a batch (ids or a programme cycle); resumable")
@tracer.capture_method
def disburse_batch(request: BatchRequest) -> BatchReply:
    require_scope(app, "vouchers:write")
    return service.disburse_batch(request, reference=_request_id(), context=app.lambda_context)


@app.get("/api/v1/vouchers/<voucher_id>", summary="A voucher: status, amounts, delivery id, audit history")
@tracer.capture_method
def get_voucher(voucher_id: Annotated[uuid.UUID, Path()]) -> VoucherView:
    require_scope(app, "vouchers:read")
    return service.get(str(voucher_id))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context, max_body_bytes=MAX_BODY_BYTES)
