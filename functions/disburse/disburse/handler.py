"""Disburse API: parse → service → reply. Operators only (scopes vouchers:write / vouchers:read)."""


import uuid
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from disburse import service
from disburse.models import BatchReply, BatchSelector, Disbursed, IssueRequest, VoucherView
from smartpay.api import make_resolver, problem_response, require_scope, resolve
from smartpay.observability import logger, metrics, tracer

MAX_BODY_BYTES = 64 * 1024

app = make_resolver()

IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"\S",
                                       description="The caller's key for this voucher: the same key again "
                                                   "replays the first answer; with another body it is a 422")]
#: Where the stateful fuzzer (and a client) goes next: the voucher's view, and sending it.
VOUCHER_LINKS = {
    "GetVoucher": {"operationId": "get_voucher_api_v1_vouchers__voucher_id__get",
                   "parameters": {"voucher_id": "$response.body#/voucher_id"}},
    "DisburseVoucher": {"operationId": "disburse_voucher_api_v1_vouchers__voucher_id__disburse_post",
                        "parameters": {"voucher_id": "$response.body#/voucher_id"}},
}
BUFFR_FAILED = {502: problem_response("Buffr failed or rejected the call; the voucher stays pending"),
                504: problem_response("Buffr did not answer in time; the voucher stays pending")}


def _request_id() -> str:
    return app.current_event.request_context.request_id


def _reply(status: int, body: dict[str, Any], replayed: bool) -> Response[dict[str, Any]]:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(status_code=status, content_type="application/json", body=body, headers=headers)


@app.post("/api/v1/vouchers", summary="Issue one voucher (Idempotency-Key header required)", status_code=201,
          responses={201: {"description": "The voucher, issued (the same again, with Idempotent-Replayed: true, "
                                           "for a repeated key)",
                           "content": {"application/json": {"model": VoucherView}}, "links": VOUCHER_LINKS}})
@tracer.capture_method
def issue_voucher(request: IssueRequest, idempotency_key: IdempotencyKey) -> Response[dict[str, Any]]:
    require_scope(app, "vouchers:write")
    voucher, replayed = service.issue(request, idempotency_key.strip(), reference=_request_id(),
                                      context=app.lambda_context)
    return _reply(201, voucher, replayed)


@app.post("/api/v1/vouchers/<voucher_id>/disburse", summary="Send one voucher to Buffr (once per voucher id)",
          responses={200: {"description": "Buffr accepted the voucher (the same again, with Idempotent-Replayed: "
                                          "true, on a repeat)",
                           "content": {"application/json": {"model": Disbursed}},
                           "links": {"GetVoucher": VOUCHER_LINKS["GetVoucher"]}}, **BUFFR_FAILED})
@tracer.capture_method
def disburse_voucher(voucher_id: Annotated[uuid.UUID, Path()]) -> Response[dict[str, Any]]:
    require_scope(app, "vouchers:write")
    logger.append_keys(voucher_id=str(voucher_id))
    result, replayed = service.disburse(str(voucher_id), reference=_request_id(), context=app.lambda_context)
    return _reply(200, result, replayed)


@app.post("/api/v1/disbursements", summary="Disburse a batch (ids or a programme cycle); resumable")
@tracer.capture_method
def disburse_batch(request: Annotated[BatchSelector, Body()]) -> BatchReply:
    require_scope(app, "vouchers:write")
    return service.disburse_batch(request.selection(), reference=_request_id(), context=app.lambda_context)


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
