"""Disburse API: parse → service → reply. Operators only (scopes vouchers:write / vouchers:read;
approving a cycle run: cycles:approve). The same function consumes the cycle queue (SQS).

One way to pay: a cycle run or a supplementary run, prepared by an operator and approved by
another principal; the queue consumer sends its vouchers. One direct invocation is accepted too:
reconciliation's :class:`smartpay.internal.Redisburse` (docs/reconciliation.md#re-sending-through-disburse),
which re-sends only pending vouchers of a run under way (the claim refuses any other).

The init loads only what the routes declare (their models); each route imports its use case when
it runs, and with SnapStart the priming hook imports them all before the snapshot
(:data:`FIRST_REQUEST`), so a restored copy finds them loaded.
"""


import uuid
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.utilities.typing import LambdaContext

from disburse.cycle_run.models import ApproveRequest, CycleRun, SupplementaryRequest
from disburse.models import BatchRequest, Cycle, IssueRequest, Programme, Voucher
from smartpay import coldstart, snapstart
from smartpay.api import (
    api_handler,
    caller,
    json_reply,
    make_resolver,
    require_scope,
)
from smartpay.observability import logger, tracer
from smartpay.validation import event_model

if TYPE_CHECKING:
    from disburse.cycle_run.service import Caller

MAX_BODY_BYTES = 64 * 1024
#: What the routes and the re-send import when they run: primed before a SnapStart snapshot.
FIRST_REQUEST = ("disburse.logic.issue", "disburse.logic.read", "disburse.logic.batch",
                 "disburse.cycle_run.service", "smartpay.internal")

app = make_resolver()

IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"\S",
                                       description="The caller's key for this voucher: the same key again "
                                                   "replays the first answer; with another body it is a 422")]
GET_VOUCHER = "get_voucher_api_v1_vouchers__voucher_id__get"
#: Where the stateful fuzzer (and a client) goes next: the voucher's view.
VOUCHER_LINKS = {
    "GetVoucher": {"operationId": GET_VOUCHER, "parameters": {"voucher_id": "$response.body#/voucher_id"}},
}


def _request_id() -> str:
    return app.current_event.request_context.request_id


@app.post("/api/v1/vouchers", summary="Issue one voucher (Idempotency-Key header required)", status_code=201,
          responses={201: {"description": "The voucher, issued (the same again, with Idempotent-Replayed: true, "
                                           "for a repeated key)",
                           "content": {"application/json": {"model": Voucher}}, "links": VOUCHER_LINKS}})
@tracer.capture_method
def issue_voucher(request: IssueRequest, idempotency_key: IdempotencyKey) -> Response[dict[str, Any]]:
    from disburse.logic import issue

    require_scope(app, "vouchers:write")
    voucher, replayed = issue.issue(request, idempotency_key.strip(), reference=_request_id(),
                                      context=app.lambda_context)
    return json_reply(201, voucher, replayed=replayed)


@app.get("/api/v1/vouchers/<voucher_id>", summary="A voucher: status, amounts, delivery id, audit history")
@tracer.capture_method
def get_voucher(voucher_id: Annotated[uuid.UUID, Path()]) -> Voucher:
    from disburse.logic import read

    require_scope(app, "vouchers:read")
    return read.get(str(voucher_id))


def redisburse(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Reconciliation's re-send: only the typed event (anything else fails the invocation, naming
    each bad field, and sends nothing). Who may invoke this function directly is IAM's decision."""
    from disburse.logic import batch
    from smartpay.internal import Redisburse, RedisburseReply

    request = event_model(Redisburse, event, what="direct invocation (disburse accepts only reconcile's redisburse)")
    logger.append_keys(run_id=str(request.run_id))
    reply = batch.disburse_batch(BatchRequest(voucher_ids=request.voucher_ids),
                                   reference=f"reconcile-{request.run_id}", context=context)
    return RedisburseReply.model_validate({"results": [r.model_dump() for r in reply.results]}).model_dump(mode="json")


# --- cycle runs ------------------------------------------------------------------------------------

CYCLE_RUN = "/api/v1/cycles/<programme>/<cycle>/disbursement"


def _caller(scope: str) -> "Caller":
    from disburse.cycle_run.service import Caller

    require_scope(app, scope)
    principal, key_id = caller(app)
    return Caller(principal=principal, key_id=key_id, reference=_request_id())


@app.post(CYCLE_RUN, summary="Prepare a cycle run for approval (Idempotency-Key header required)",
          responses={201: {"description": "Prepared, awaiting approval",
                           "content": {"application/json": {"model": CycleRun}}},
                     200: {"description": "The run this key already prepared (Idempotent-Replayed: true)",
                           "content": {"application/json": {"model": CycleRun}}}})
@tracer.capture_method
def prepare_cycle_run(programme: Annotated[Programme, Path()], cycle: Annotated[Cycle, Path()],
                      idempotency_key: IdempotencyKey) -> Response[dict[str, Any]]:
    from disburse.cycle_run import service as cycle_runs

    who = _caller("vouchers:write")
    run, replayed = cycle_runs.prepare(programme, cycle, idempotency_key, who)
    return json_reply(200 if replayed else 201, run.model_dump(mode="json"), replayed=replayed)


@app.post(f"{CYCLE_RUN}/supplementary",
          summary="Prepare a supplementary run: named vouchers, or held ones eligible again (Idempotency-Key)",
          responses={201: {"description": "Prepared, awaiting approval",
                           "content": {"application/json": {"model": CycleRun}}},
                     200: {"description": "The run this key already prepared (Idempotent-Replayed: true)",
                           "content": {"application/json": {"model": CycleRun}}}})
@tracer.capture_method
def prepare_supplementary_run(programme: Annotated[Programme, Path()], cycle: Annotated[Cycle, Path()],
                              request: Annotated[SupplementaryRequest, Body()],
                              idempotency_key: IdempotencyKey) -> Response[dict[str, Any]]:
    from disburse.cycle_run import service as cycle_runs

    who = _caller("vouchers:write")
    run, replayed = cycle_runs.prepare(programme, cycle, idempotency_key, who, request.selection())
    return json_reply(200 if replayed else 201, run.model_dump(mode="json"), replayed=replayed)


@app.post(f"{CYCLE_RUN}/approve", summary="Approve the run reviewed, named by id and fingerprint (another principal, "
                                          "cycles:approve)",
          responses={202: {"description": "Approved and enqueued", "content": {"application/json": {"model": CycleRun}}}})
@tracer.capture_method
def approve_cycle_run(programme: Annotated[Programme, Path()], cycle: Annotated[Cycle, Path()],
                      reviewed: Annotated[ApproveRequest, Body()]) -> Response[dict[str, Any]]:
    from disburse.cycle_run import service as cycle_runs

    run = cycle_runs.approve(programme, cycle, reviewed, _caller("cycles:approve"))
    return json_reply(202, run.model_dump(mode="json"))


@app.post(f"{CYCLE_RUN}/pause", summary="Pause the run: no new sends after the current turn")
@tracer.capture_method
def pause_cycle_run(programme: Annotated[Programme, Path()], cycle: Annotated[Cycle, Path()]) -> CycleRun:
    from disburse.cycle_run import service as cycle_runs

    return cycle_runs.pause(programme, cycle, _caller("vouchers:write"))


@app.post(f"{CYCLE_RUN}/resume", summary="Resume a paused run (or finish an interrupted enqueue)")
@tracer.capture_method
def resume_cycle_run(programme: Annotated[Programme, Path()], cycle: Annotated[Cycle, Path()]) -> CycleRun:
    from disburse.cycle_run import service as cycle_runs

    return cycle_runs.resume(programme, cycle, _caller("vouchers:write"))


@app.post(f"{CYCLE_RUN}/cancel", summary="Cancel a paused run (four eyes: neither its maker nor who paused it; "
                                        "cycles:approve)")
@tracer.capture_method
def cancel_cycle_run(programme: Annotated[Programme, Path()], cycle: Annotated[Cycle, Path()]) -> CycleRun:
    from disburse.cycle_run import service as cycle_runs

    return cycle_runs.cancel(programme, cycle, _caller("cycles:approve"))


@app.get(CYCLE_RUN, summary="The cycle's latest run and its progress")
@tracer.capture_method
def get_cycle_run(programme: Annotated[Programme, Path()], cycle: Annotated[Cycle, Path()]) -> CycleRun:
    from disburse.cycle_run import service as cycle_runs

    require_scope(app, "vouchers:read")
    return cycle_runs.status(programme, cycle)


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Events not from API Gateway: the cycle queue's SQS batches, else reconciliation's re-send."""
    if event.get("Records"):
        # Powertools' batch utility brings the parser's event models (~70 ms of imports): only the
        # queue's invocations load it, not every API cold start.
        from disburse.cycle_run import consumer

        return consumer.handle(event, context)
    return redisburse(event, context)


lambda_handler = api_handler(app, max_body_bytes=MAX_BODY_BYTES, direct=direct)


# SnapStart: primed before the snapshot, connections and secrets renewed after each restore.
snapstart.register(snapstart.prime_idempotency("issue"),
                   snapstart.prime_modules(*FIRST_REQUEST, "aws_lambda_powertools.utilities.parameters", "psycopg_pool",
                                           "smartpay.buffr"))
coldstart.end()  # the init is over: freeze what it loaded, collector back on (smartpay.coldstart)
