"""Send vouchers to Buffr exactly once: the send pipeline and how Buffr's answers are recorded.

Exactly once rests on three guards, each enough on its own for its failure:

1. One door: the claim (``issued``/``held`` → ``pending``, or a ``pending`` one re-sent) succeeds
   only for a voucher of a run that is approved, enqueuing or running, never past its expiry
   (the claim's statement and a trigger, migration 0014).
2. The database: ``issued → pending`` is committed (row lock + state machine) *before* the HTTP
   call, so only one writer ever starts a voucher; a voucher past ``pending`` is never re-sent.
3. Buffr's idempotency: the key is ``disburse-<voucher_id>``, so re-sending a ``pending`` voucher
   (a retry after a timeout, a crash, a later batch) can never credit a wallet twice — while
   Buffr keeps the key: past a grace period a pending voucher is looked up before any re-send,
   and a rejection that may follow a lost success is looked up too (:mod:`smartpay.resend`).

A voucher Buffr did not answer for stays ``pending`` (never ``failed`` on a guess); a later
retry, batch or reconciliation finishes it.
"""

from __future__ import annotations

import queue
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from disburse import repository
from disburse.models import BatchItem, BatchReply, BatchRequest
from smartpay import buffr, db, resend
from smartpay.lifecycle import VoucherStatus
from smartpay.observability import logger, metrics
from smartpay.settings import env_float
from smartpay.transitions import Change, transition_many

SOURCE = "disburse"
GATHER_S = 0.01  # a batch turn's tick: how long answers gather before one statement records them


def _margin() -> float:
    """Seconds kept back from the Lambda deadline for the database write after Buffr's answer."""
    return env_float("DISBURSE_DEADLINE_MARGIN_S", 2.0)


def call_deadline(context: Any) -> float:
    """When this invocation's Buffr calls must stop: its deadline less the margin above."""
    return buffr.deadline_from(context, _margin())


def apply(conn: Any, results: list[buffr.BuffrResult], reference: str) -> list[BatchItem]:
    """Record Buffr's answers: accepted → active, rejected → failed; no answer leaves pending."""
    changes = _changes(results)
    return _items(results, transition_many(conn, changes, source=SOURCE, reference=reference))


def _changes(results: list[buffr.BuffrResult]) -> list[Change]:
    """The status changes Buffr's answers call for (an unanswered voucher stays pending)."""
    changes = []
    for r in results:
        if r.outcome == "accepted":
            delivery_id = r.delivery_id
            changes.append(Change(r.voucher_id, VoucherStatus.ACTIVE, delivery_id=delivery_id,
                                  detail={"delivery_id": delivery_id, "attempts": r.attempts}))
        elif r.outcome == "rejected":
            changes.append(Change(r.voucher_id, VoucherStatus.FAILED, failure_reason=r.reason,
                                  detail={"http_status": r.status_code, "attempts": r.attempts}))
    return changes


def _items(results: list[buffr.BuffrResult], transitions: list[Any]) -> list[BatchItem]:
    """Per-voucher batch results from Buffr's answers and the transitions they caused."""
    applied = {t.voucher_id: t for t in transitions}
    items = []
    for r in results:
        t = applied.get(r.voucher_id)
        if r.outcome == "accepted":
            # A concurrent writer (webhook, reconcile) may already have moved it on; still a success.
            items.append(BatchItem(voucher_id=r.voucher_id, outcome="active", delivery_id=r.delivery_id,
                                   status=t.to_status if t and t.applied else (t.from_status if t else None),
                                   attempts=r.attempts))
        elif r.outcome == "rejected":
            items.append(BatchItem(voucher_id=r.voucher_id, outcome="failed", reason=r.reason,
                                   status=t.to_status if t and t.applied else (t.from_status if t else None),
                                   attempts=r.attempts))
        else:
            items.append(BatchItem(voucher_id=r.voucher_id, outcome="pending", status="pending",
                                   reason=r.reason or r.error, attempts=r.attempts))
    log_items(items, results)
    return items


def log_items(items: list[BatchItem], results: list[buffr.BuffrResult | None]) -> None:
    """One line per voucher that did not go through (with why), one line for those that did.

    A 10,000-voucher batch logs a few hundred lines, not 10,000: every voucher id is still in
    a line to grep for, and each success is in the voucher's audit history anyway.
    """
    active = []
    for item, r in zip(items, results, strict=True):
        if item.outcome == "active":
            active.append(item.voucher_id)
        else:
            logger.warning("disbursement not completed", extra={
                "voucher_id": item.voucher_id, "outcome": item.outcome, "status": item.status,
                "attempts": r.attempts if r else 0, "error": r.error if r else None, "reason": item.reason})
    if active:
        logger.info("disbursements accepted by Buffr", extra={"count": len(active), "voucher_ids": active})


def count_outcomes(items: list[BatchItem]) -> None:
    """Metrics once per call (aggregated), so a 10,000-voucher batch emits a handful of values."""
    totals = {"DisbursementsSucceeded": 0, "DisbursementsFailed": 0, "DisbursementsPending": 0,
              "DisbursementsIneligible": 0, "DisbursementRetries": 0}
    for item in items:
        if item.outcome == "active":
            totals["DisbursementsSucceeded"] += 1
        elif item.outcome == "failed":
            totals["DisbursementsFailed"] += 1
        elif item.outcome == "pending":
            totals["DisbursementsPending"] += 1
        elif item.outcome == "ineligible":
            totals["DisbursementsIneligible"] += 1
        totals["DisbursementRetries"] += max(item.attempts - 1, 0)
    for name, value in totals.items():
        if value:
            metrics.add_metric(name=name, unit="Count", value=value)


# --- disburse a batch ------------------------------------------------------------------------------

def disburse_batch(request: BatchRequest, *, reference: str, context: Any) -> BatchReply:
    """Re-send these vouchers inside one invocation (reconciliation's re-send), resumable.

    :func:`send` with ``BUFFR_CONCURRENCY`` calls in flight until the deadline. The claim sends
    only vouchers of a run under way (approved, enqueuing, running); what was never claimed is
    returned in ``not_attempted``; a claimed voucher whose call the deadline cut is ``pending``.
    """
    client = buffr.client()
    settings = client.settings
    deadline = call_deadline(context)
    with db.autocommit() as conn:
        ids = list(dict.fromkeys(str(v) for v in request.voucher_ids))
        details = {row[0]: row[1:] for row in repository.sendable(conn, ids)}
        requested = len(ids)
        sent = send(conn, ids, details, deadline=deadline, reference=reference, in_flight=settings.concurrency)
    items, not_attempted, stopped_early = sent.items, sent.not_attempted, sent.stopped_early
    count_outcomes(items)
    outcomes = [i.outcome for i in items]
    logger.info("batch finished", extra={"requested": requested, "attempted": len(items),
                                         "not_attempted": len(not_attempted), "stopped_early": stopped_early})
    return BatchReply(requested=requested, attempted=requested - len(not_attempted),
                      succeeded=outcomes.count("active"), failed=outcomes.count("failed"),
                      pending=outcomes.count("pending"), ineligible=outcomes.count("ineligible"),
                      skipped=outcomes.count("skipped") + outcomes.count("not_found"),
                      stopped_early=stopped_early or bool(not_attempted), not_attempted=not_attempted,
                      results=items)


@dataclass
class Sent:
    """What one :func:`send` came to."""

    items: list[BatchItem] = field(default_factory=list)
    not_attempted: list[str] = field(default_factory=list)
    stopped_early: bool = False  # the deadline came first
    stopped: bool = False  # ``keep_claiming`` said stop (a paused cycle run)
    calls: int = 0  # logical Buffr calls answered (each with one or more attempts)
    retries: int = 0  # Buffr attempts beyond each call's first
    errors: Counter[str] = field(default_factory=Counter)  # why calls did not go through, by class


def send(conn: Any, ids: list[str], details: dict[str, tuple[Any, ...]], *, deadline: float, reference: str,
         in_flight: int, pacer: buffr.Pacer | None = None,
         keep_claiming: Callable[[], bool] | None = None) -> Sent:
    """Send these vouchers to Buffr on ``conn`` (autocommit), claiming each ``issued → pending`` first.

    Keeps ``in_flight`` calls in flight and as many again submitted behind them (only
    ``in_flight`` when paced: a paced call waits for its turn, so claiming far ahead would only
    hold vouchers in ``pending``), so the calls keep going while this thread talks to the
    database. Each turn is one statement (:func:`repository.settle_and_claim`: record the answers
    that arrived, claim as many as are free), atomic on its own; between turns the thread sleeps a
    tick and takes every answer that came in meanwhile — one wake-up per turn, not one per
    answer, since each wake-up takes the GIL from the client's busy I/O thread. Stops claiming
    when less than one full attempt fits before the deadline, or when ``keep_claiming`` (asked
    before each claim) says so; what was never claimed is returned in ``not_attempted``
    (untouched: still ``issued``); a claimed voucher whose call the deadline cut is ``pending``.

    With a spare pooled connection (:func:`db.spare_autocommit`), a turn's two halves run at
    once: the answers are recorded on the spare while ``conn`` claims the next vouchers. They
    touch different vouchers (a voucher is answered only after its claim committed in an earlier
    turn), each half is one atomic statement, and the calls start as soon as the claim
    is in. One connection's statements would otherwise bound the batch: recording and claiming
    cost about as much database time per voucher as a call on the wire (docs/performance.md).

    Pending vouchers go through :func:`smartpay.resend.before_resend` first (looked up at Buffr
    past the grace period; reported, not sent, when Buffr has them or they may not be paid).
    """
    checked = resend.before_resend(conn, ids, deadline=deadline, reference=reference, pacer=pacer)
    with ExitStack() as stack:
        spare = db.spare_autocommit(stack)
        helper = stack.enter_context(ThreadPoolExecutor(1, "batch-settle")) if spare is not None else None
        sent = _send(conn, spare, helper, [v for v in ids if v not in checked.skip], details, deadline=deadline,
                     reference=reference, in_flight=in_flight, pacer=pacer, keep_claiming=keep_claiming,
                     pending=checked.pending)
    sent.items.extend(_items_looked_up(checked))
    return sent


def _items_looked_up(checked: resend.Checked) -> list[BatchItem]:
    """Pending vouchers not sent again: settled by Buffr's word, or left pending (resend's rules)."""
    settled = {t.voucher_id: t.to_status for t in checked.settled if t.applied}
    items = []
    for v in sorted(checked.skip):
        status = settled.get(v, "pending")
        if v in checked.unpayable:  # expired is not the beneficiary's eligibility: skipped, as at the claim
            reason = checked.unpayable[v]
            outcome = "skipped" if reason == "not sent: expired" else "ineligible"
        elif status == "pending":
            outcome, reason = "pending", "not sent again until Buffr says it does not have it"
        else:
            outcome = "active" if status in {"active", "redeemed"} else "skipped"
            reason = f"Buffr has it ({status}): not sent again"
        items.append(BatchItem(voucher_id=v, outcome=outcome, status=status, reason=reason))
    return items


def _send(conn: Any, spare: Any, helper: ThreadPoolExecutor | None, ids: list[str],
          details: dict[str, tuple[Any, ...]], *, deadline: float, reference: str, in_flight: int,
          pacer: buffr.Pacer | None, keep_claiming: Callable[[], bool] | None, pending: set[str]) -> Sent:
    client = buffr.client()
    settings = client.settings
    stop_claiming_at = deadline - (settings.connect_timeout + settings.read_timeout)
    submit_limit = in_flight if pacer is not None else 2 * in_flight
    claim_at_least = max(1, in_flight // 4)
    todo = deque(ids)
    done: queue.SimpleQueue[buffr.BuffrResult] = queue.SimpleQueue()
    outstanding = 0
    out = Sent()
    results: list[buffr.BuffrResult] = []
    while todo or outstanding or results:
        turn_started = time.monotonic()
        chunk: list[str] = []
        free = submit_limit - outstanding
        if todo and not out.stopped and (free >= min(claim_at_least, len(todo)) or not outstanding):
            if time.monotonic() >= stop_claiming_at:
                out.stopped_early = True
            elif keep_claiming is not None and not keep_claiming():
                out.stopped = True
            else:
                chunk = [todo.popleft() for _ in range(min(free, len(todo)))]
        if results or chunk:
            recording = None
            if helper is not None and results and chunk:  # the answers on the spare, meanwhile
                recording = helper.submit(repository.settle_and_claim, spare, _changes(results), [], reference)
            try:
                if recording is not None:
                    _, claimed, refused = repository.settle_and_claim(conn, [], chunk, reference)
                else:
                    settled, claimed, refused = repository.settle_and_claim(conn, _changes(results), chunk, reference)
                if claimed:  # first: the calls start while this thread does the bookkeeping
                    missing = [v for v in claimed if v not in details]
                    if missing:  # cannot happen for ids read up front; never send without details
                        details.update((row[0], row[1:]) for row in repository.sendable(conn, missing))
                    client.submit_disburse_many(
                        [buffr.DisburseRequest(v, int(details[v][0]), *details[v][1:]) for v in claimed],
                        deadline=deadline, on_result=done.put, pacer=pacer)
                    outstanding += len(claimed)
            except BaseException:
                if recording is not None and (lost := recording.exception()) is not None:  # waits for it
                    logger.error("recording Buffr's answers failed as well", extra={
                        "error": type(lost).__name__, "answers": len(results)})
                raise
            if recording is not None:
                settled = recording.result()[0]
            out.items.extend(_items(results, settled))
            if refused:
                turned_down = [refused_item(t) for t in refused]
                log_items(turned_down, [None] * len(turned_down))
                out.items.extend(turned_down)
            out.calls += len(results)
            for r in results:
                out.retries += max(r.attempts - 1, 0)
                if r.outcome != "accepted":
                    out.errors["rejected" if r.outcome == "rejected" else (r.error or "unavailable")] += 1
        results = []
        if not outstanding:
            if out.stopped_early or out.stopped or not todo:
                break
            continue
        busy = time.monotonic() - turn_started  # answers queued up meanwhile
        results.append(done.get(timeout=max(deadline - time.monotonic(), 0) + 30))
        if busy < GATHER_S:  # let a tick's answers gather, the turn's own work included: one wake-up per turn
            time.sleep(GATHER_S - busy)
        while True:
            try:
                results.append(done.get_nowait())
            except queue.Empty:
                break
        outstanding -= len(results)
        results = resend.confirm_rejections(results, pending, deadline=deadline, pacer=pacer)
    out.not_attempted = list(todo)
    return out


def refused_item(t: Any) -> BatchItem:
    """A voucher this call did not send: unknown, past pending, not in an approved run, expired, or its
    beneficiary not eligible."""
    if t.ineligible is not None:
        return BatchItem(voucher_id=t.voucher_id, outcome="ineligible",
                         status=t.to_status if t.applied else t.from_status,
                         reason=f"not sent: {t.ineligible}")
    if t.outcome == "not_found":
        return BatchItem(voucher_id=t.voucher_id, outcome="not_found", status=None, reason="no such voucher")
    if t.refused is not None:
        return BatchItem(voucher_id=t.voucher_id, outcome="skipped", status=t.from_status,
                         reason=f"not sent: {t.refused}")
    if t.applied and t.to_status == "expired":
        return BatchItem(voucher_id=t.voucher_id, outcome="skipped", status="expired",
                         reason="not sent: expired before it was sent")
    return BatchItem(voucher_id=t.voucher_id, outcome="skipped", status=t.from_status,
                     reason=f"voucher is {t.from_status}; not sent again")
