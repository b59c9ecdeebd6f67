"""The disburse function's SQS consumer: one message = one chunk of a cycle run.

Powertools' batch utility runs each record and reports the ones that raised as
``batchItemFailures`` (the event source's ``ReportBatchItemFailures``): SQS deletes the rest and
redelivers those after the visibility timeout; after ``maxReceiveCount`` deliveries a message
goes to the dead-letter queue (alarmed). A record fails when some of its vouchers are not
settled yet (still ``pending``: Buffr did not answer), when the invocation's deadline came
first (that message is made visible again at once: the next invocation continues the chunk),
or when its body is not a chunk message at all (a poison message).

Exactly once per chunk: the message carries the chunk's token; a message whose token is not
the chunk's current one (re-sent after a crash) or whose chunk is already done is dropped.
Exactly once per voucher towards Buffr rests, as everywhere, on the ``issued → pending`` claim
and Buffr's ``disburse-<voucher_id>`` key.

Rate: every attempt draws from Buffr's one rate budget (:mod:`smartpay.rate_budget`), shared with
every other sender, so one invocation may use the whole agreed rate when it is the only one
sending (a small run) and many share it when the queue runs many.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import TypeAdapter

from disburse.cycle_run import queue, repository
from disburse.cycle_run import service as run_service
from disburse.cycle_run.models import ChunkMessage, EnqueueMessage
from disburse.cycle_run.service import reference_of
from disburse.logic import batch
from smartpay import anchors, buffr, db, leases, resend
from smartpay.observability import logger, metrics
from smartpay.settings import env_float

RUNNING = frozenset({"running", "enqueuing"})
STATUS_EVERY_S = 0.1  # how often a chunk's send loop asks whether its run was paused

processor = BatchProcessor(event_type=EventType.SQS)
#: A chunk, or the rest of a run's enqueue handed over by approve / resume (extra fields forbidden,
#: so a body is exactly one of them or neither: a poison message).
MESSAGE: TypeAdapter[ChunkMessage | EnqueueMessage] = TypeAdapter(ChunkMessage | EnqueueMessage)
ENQUEUE_MARGIN_S = 5.0  # of the invocation kept back when it continues an enqueue


class ChunkNotSettled(Exception):
    """Some of the chunk's vouchers are not settled yet: SQS delivers the message again."""


class ChunkCutShort(ChunkNotSettled):
    """The invocation's deadline came before the chunk was sent (a budget slowed by Buffr's 429s
    sends a chunk at a fraction of the rate): the message is made visible again in
    ``DELIVER_AGAIN_S``, so the next invocation continues the chunk at once rather than after the
    queue's visibility timeout."""


DELIVER_AGAIN_S = 1


#: Calls in flight per invocation, in seconds of the agreed rate: enough to carry the whole rate
#: through Buffr's latency, its retries' backoff and a few timeouts.
IN_FLIGHT_S = 0.5
#: Rounds of one chunk in one invocation: vouchers no attempt of a round got an answer for are
#: sent again in the next (then the queue's redelivery takes over).
ROUNDS = 3


def invocation_concurrency() -> int:
    """Calls in flight per invocation (at most BUFFR_CONCURRENCY): the budget, not this bound,
    keeps every sender together under Buffr's rate; this only stops the consumer from claiming
    (issued → pending) far ahead of what the budget lets it send."""
    ceiling = buffr.client().settings.concurrency
    rate = env_float("BUFFR_MAX_RATE_PER_S", 0.0)
    return ceiling if rate <= 0 else max(1, min(ceiling, math.ceil(rate * IN_FLIGHT_S)))


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The SQS entry point: records one by one, failures reported per record."""
    return process_partial_response(event=event, record_handler=process_chunk, processor=processor,
                                    context=context)


def process_chunk(record: SQSRecord, lambda_context: Any = None) -> None:
    """One chunk message (Powertools passes the Lambda context as ``lambda_context``)."""
    context = lambda_context
    message = MESSAGE.validate_json(record.body)  # neither: a poison message (→ DLQ)
    if isinstance(message, EnqueueMessage):
        _continue_enqueue(str(message.run_id), record, context)
        return
    run_id, chunk_no = str(message.run_id), message.chunk_no
    logger.append_keys(run_id=run_id, chunk_no=chunk_no, message_id=record.message_id)
    try:
        with db.autocommit() as conn:
            holder = repository.try_lock_chunk(conn, run_id, chunk_no, leases.ttl_for(context, 60))
            if holder is None:
                # Redelivered while another invocation still works on it (a visibility timeout shorter
                # than that invocation): never two senders for one chunk; SQS delivers it again later.
                raise ChunkNotSettled(f"chunk {chunk_no} is being processed by another invocation")
            try:
                _process(conn, record, message, context)
            finally:
                repository.unlock_chunk(conn, run_id, chunk_no, holder)
    except ChunkCutShort:
        # The lease is released: the next delivery may take the chunk as soon as it comes.
        if not queue.deliver_again_in(record.receipt_handle, DELIVER_AGAIN_S):
            logger.warning("chunk cut short by the deadline: SQS delivers it again after the visibility timeout")
        raise


def _continue_enqueue(run_id: str, record: SQSRecord, context: Any) -> None:
    """Enqueue the run's remaining chunks on the approver's behalf (the audit names the checker);
    a run too big for this invocation hands itself on again."""
    logger.append_keys(run_id=run_id, message_id=record.message_id)
    with db.connection() as conn:
        run = repository.get(conn, run_id)
    if run is None or run["checker_key_id"] is None:
        logger.warning("enqueue message for no approved run dropped")
        return
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 25.0
    caller = run_service.Caller(principal=run["checker_principal"], key_id=run["checker_key_id"],
                                reference=record.message_id)
    run_service.enqueue(run_id, caller, within_s=max(remaining - ENQUEUE_MARGIN_S, 1.0))


def _process(conn: Any, record: SQSRecord, message: ChunkMessage, context: Any) -> None:
    run_id, chunk_no, token = str(message.run_id), message.chunk_no, str(message.token)
    deadline = batch.call_deadline(context)
    in_flight = invocation_concurrency()  # first: a new container's Buffr client starts up meanwhile
    run = repository.receive(conn, run_id, chunk_no, token)
    if run is None:
        logger.info("stale or finished chunk message dropped")
        metrics.add_metric(name="CycleMessagesDropped", unit="Count", value=1)
        return
    if run["status"] not in RUNNING:
        _park(conn, run_id, chunk_no, token, run["status"])
        return
    ids = repository.chunk_ids(conn, run_id, chunk_no)
    if sorted(str(v) for v in message.voucher_ids) != ids:
        raise ValueError(f"message for chunk {chunk_no} does not list the chunk's vouchers")
    rows = repository.to_send(conn, ids)
    # Pending vouchers that may not be sent again (beneficiary ineligible, expired): Buffr is asked
    # whether it has them, so the run finishes whatever it says (smartpay.resend).
    sendable = {r[0] for r in rows}
    unsendable = resend.before_resend(conn, [v for v in ids if v not in sendable], deadline=deadline,
                                      reference=reference_of(run_id))
    checked = [0.0, True]

    def keep_claiming() -> bool:
        now = time.monotonic()
        if now - checked[0] >= STATUS_EVERY_S:
            checked[0], checked[1] = now, repository.run_status(conn, run_id) in RUNNING
        return bool(checked[1])

    for rounds in range(1, ROUNDS + 1):
        sent = batch.send(
            conn, [r[0] for r in rows], {r[0]: r[1:] for r in rows}, deadline=deadline,
            reference=reference_of(run_id), in_flight=in_flight,
            keep_claiming=keep_claiming)
        repository.record_turns(conn, run_id, chunk_no, attempts=sent.calls, retries=sent.retries,
                                errors=dict(sent.errors))
        batch.count_outcomes(sent.items)
        if sent.stopped:
            _park(conn, run_id, chunk_no, token, repository.run_status(conn, run_id) or "unknown")
            return
        left = repository.unsettled(conn, ids, resend.grace_s()) + len(unsendable.unanswered)
        if not left:
            break
        if sent.stopped_early or rounds == ROUNDS:
            metrics.add_metric(name="CycleChunksRetried", unit="Count", value=1)
            unsettled = ChunkCutShort if sent.stopped_early else ChunkNotSettled
            raise unsettled(f"{left} of chunk {chunk_no}'s vouchers are not settled yet"
                            + (" (deadline)" if sent.stopped_early else ""))
        # Buffr answered none of a call's attempts: send those again now, paced by the budget
        # like any call (same key), rather than after the queue's visibility timeout.
        rows = repository.to_send(conn, ids)
    with conn.transaction():  # the chunk's end and the run's completion (its audit row is the database's) commit together
        completed = repository.finish_chunk(conn, run_id, chunk_no, token, reference=record.message_id)
    if completed:
        anchors.write_after(conn, kind="cycle-run", reference=run_id)
        logger.info("cycle run completed")
        metrics.add_metric(name="CycleRunsCompleted", unit="Count", value=1)


def _park(conn: Any, run_id: str, chunk_no: int, token: str, status: str) -> None:
    """The run is not running (paused, or finished otherwise): set the chunk aside, message done.
    Resume plans parked chunks again. A run resumed meanwhile is not left with a parked chunk:
    the message is delivered again and sent then."""
    outcome = repository.park(conn, run_id, chunk_no, token)
    if outcome == "running":
        raise ChunkNotSettled(f"chunk {chunk_no}'s run was resumed while it was being parked")
    logger.info("chunk parked" if outcome == "parked" else "stale chunk message dropped",
                extra={"run_status": status})
