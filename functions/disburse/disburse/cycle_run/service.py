"""Cycle runs: four eyes before money moves, then SQS and the disburse function carry the cycle.

* ``prepare`` (maker, operator scope, ``Idempotency-Key``): what a run would send — count,
  total, per-region totals, eligibility exceptions — and a fingerprint of exactly those vouchers,
  in ``awaiting_approval`` until ``CYCLE_APPROVAL_TTL_S`` (then ``expired``). The run row is
  the idempotency record (unique per programme, cycle and key, kept as long as the run), so a
  repeated prepare answers the same run whenever it comes, not only within a cache's TTL.
* A **supplementary run** is prepared the same way for a selection of the cycle (explicit voucher
  ids, or the held vouchers whose beneficiary is eligible again) and approved like any run: the
  one way to pay a voucher outside the cycle's own run (the database claims a voucher only for a
  run that is approved, enqueuing or running; migration 0014).
* ``approve`` (checker, ``cycles:approve``) names the run and fingerprint it reviewed: refused
  (403) for the maker's key or principal, and (409) for any other run or fingerprint, or when the
  cycle changed since preparation (fingerprint). Approval plans the ledger — each
  eligible issued voucher in exactly one chunk — in the same transaction, then enqueues.
* Enqueuing is resumable and exactly-once per chunk: a chunk's fresh token is committed before
  its message is sent, and the consumer acts only on the current token (see :mod:`.consumer`).
  A request (approve, resume) enqueues for ``CYCLE_ENQUEUE_IN_REQUEST_S`` at most, then hands the
  rest to the queue side (one message the consumer continues from), so a national run's
  approval answers well inside API Gateway's 29 s.
* ``pause`` / ``resume``: the consumer stops claiming within one turn and parks its chunk;
  resume plans parked chunks again and enqueues what is left.

Every prepare, approval (and refusal), pause and resume has a ``cycle_run_events`` row naming
the principal and key: the database writes it for each status move (migration 0016) from the
actor the moving statement sets; a refused approval (no move) is written here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from disburse.cycle_run import queue, repository
from disburse.cycle_run.models import (
    ApproveRequest,
    CycleRun,
    EligibilityExceptions,
    EnqueueMessage,
    Party,
    Progress,
    RegionTotal,
)
from smartpay import anchors, db
from smartpay.errors import Conflict, DatabaseUnavailable, Forbidden, NotFound, ProblemError, Unprocessable
from smartpay.observability import logger, metrics
from smartpay.settings import env_float, env_int

SEND_BATCH = 10  # SQS's SendMessageBatch maximum


@dataclass(frozen=True)
class Caller:
    principal: str
    key_id: str
    reference: str  # the request id, for the audit trail


def reference_of(run_id: str) -> str:
    """The audit reference of the vouchers a run sends (and the progress rate's index key)."""
    return f"cycle-run:{run_id}"


def chunk_size(vouchers: int) -> int:
    """Vouchers per chunk, sized from the run: at most ``CYCLE_CHUNK_SIZE``, and small enough that
    every consumer the queue may run at once gets a chunk (a small run is spread over all of them,
    so no one invocation carries the run's tail alone). All of them draw from the one rate budget."""
    most = env_int("CYCLE_CHUNK_SIZE", 500, minimum=1, maximum=1000)
    consumers = env_int("CYCLE_QUEUE_MAX_CONCURRENCY", 2, minimum=1)
    return max(1, min(most, math.ceil(vouchers / consumers)))


def _in_request_s() -> float:
    """How long approve / resume enqueue in the request before the queue side takes over."""
    return env_float("CYCLE_ENQUEUE_IN_REQUEST_S", 1.0)


def _ttl_s() -> int:
    return env_int("CYCLE_APPROVAL_TTL_S", 24 * 3600, minimum=60)


# --- views -----------------------------------------------------------------------------------------

def _view(row: dict[str, Any], progress: Progress | None = None) -> CycleRun:
    exceptions = row["exceptions"] or {}
    checker = (Party(principal=row["checker_principal"], key_id=row["checker_key_id"])
               if row["checker_key_id"] else None)
    return CycleRun(run_id=row["id"], kind=row["kind"], programme=row["programme"], cycle=row["cycle"], status=row["status"],
                    voucher_count=row["voucher_count"], total_amount_cents=row["total_amount_cents"],
                    region_totals=[RegionTotal(**r) for r in row["region_totals"] or []],
                    exceptions=EligibilityExceptions(**exceptions), fingerprint=row["fingerprint"],
                    maker=Party(principal=row["maker_principal"], key_id=row["maker_key_id"]), checker=checker,
                    prepared_at=row["prepared_at"], expires_at=row["expires_at"], approved_at=row["approved_at"],
                    finished_at=row["finished_at"], progress=progress)


def _progress(conn: Any, run_id: str) -> Progress:
    found = repository.progress(conn, run_id, reference_of(run_id))
    s = found["statuses"]
    total = sum(s.values())
    queued, pending = s.get("issued", 0), s.get("pending", 0)
    held = s.get("held", 0) + s.get("ineligible", 0)
    rate = found["sent_last_minute"] / 60.0
    sent = total - queued - held - s.get("cancelled", 0) - s.get("expired", 0)
    return Progress(total=total, queued=queued, sent=max(sent, 0), pending=pending,
                    active=s.get("active", 0) + s.get("redeemed", 0), failed=s.get("failed", 0), held=held,
                    other=s.get("cancelled", 0) + s.get("expired", 0), chunks=found["chunks"],
                    receives=found["receives"], buffr_calls=found["attempts"] + found["retries"],
                    retries=found["retries"], errors=found["errors"],
                    rate_per_s=round(rate, 2),
                    eta_s=round((queued + pending) / rate, 1) if rate > 0 else None)


# --- prepare ---------------------------------------------------------------------------------------

def prepare(programme: str, cycle: str, key: str | None, caller: Caller,
            selection: dict[str, Any] | None = None) -> tuple[CycleRun, bool]:
    """Prepare a run of the cycle for approval (a supplementary run of ``selection``, see
    :func:`repository._scope`); returns (run, replayed)."""
    if not key:
        raise ProblemError("An idempotency key is required (Idempotency-Key header).", status=400,
                           title="Idempotency key required",
                           errors=[{"location": "header.Idempotency-Key", "message": "required"}])
    if len(key) > 200:
        raise Unprocessable("The Idempotency-Key is longer than 200 characters.",
                            errors=[{"location": "header.Idempotency-Key", "message": "at most 200 characters"}])
    with db.transaction() as conn:
        if not repository.programme_exists(conn, programme):
            raise NotFound(f"Unknown programme {programme!r}.")
        repository.expire_stale(conn, programme, cycle, reference=caller.reference)
        existing = repository.by_key(conn, programme, cycle, key)
        if existing is not None:
            if existing["selection"] != selection:  # the key names another request (kind or selection)
                raise Unprocessable(f"Idempotency-Key {key!r} already prepared run {existing['id']} of another "
                                    "selection; use a new key for a new request.", title="Idempotency key reused",
                                    extra={"run_id": str(existing["id"])})
            return _view(existing), True
        current = repository.open_run(conn, programme, cycle, lock=True)
        kind = "cycle" if selection is None else "supplementary"
        # A run awaiting approval is superseded only by a run of its own kind.
        if current is not None and (current["status"] != "awaiting_approval" or current["kind"] != kind):
            raise Conflict(f"Run {current['id']} ({current['kind']}) of {programme} {cycle} is {current['status']}; "
                           "a cycle has one run under way at a time.", title="Cycle run under way",
                           extra={"run_id": str(current["id"]), "run_status": current["status"]})
        if current is not None:  # prepared again (e.g. the cycle changed): the old one is superseded
            repository.set_status(conn, str(current["id"]), "cancelled", expected="awaiting_approval", by=caller,
                                  finished=True)
        if selection is not None and "voucher_ids" in selection:
            unknown = repository.not_payable(conn, programme, cycle, selection["voucher_ids"])
            if unknown:
                raise Unprocessable(f"{len(unknown)} of the vouchers named are not issued or held vouchers of "
                                    f"{programme} {cycle}.", title="Vouchers not payable",
                                    errors=[{"location": "body.voucher_ids", "message": f"not payable: {v}"}
                                            for v in unknown[:20]])
        snap = repository.snapshot(conn, programme, cycle, selection)
        if snap["voucher_count"] == 0:
            # The request is well formed; the cycle's state refuses it (as for a run already open).
            raise Conflict(f"{programme} {cycle} has no {'issued' if selection is None else 'selected'} "
                           "vouchers to disburse.",
                           title="Nothing to disburse",
                                extra={"exceptions": int(sum((snap["by_reason"] or {}).values()))})
        exceptions = {"total": int(sum(snap["by_reason"].values())), "by_reason": snap["by_reason"],
                      "voucher_ids": snap["exception_ids"]}
        run_id = repository.insert(conn, {
            "kind": kind, "selection": selection,
            "programme": programme, "cycle": cycle, "idempotency_key": key, "fingerprint": snap["fingerprint"],
            "voucher_count": snap["voucher_count"], "total_amount_cents": snap["total_amount_cents"],
            "region_totals": snap["region_totals"], "exceptions": exceptions,
            "chunk_size": chunk_size(snap["voucher_count"]),
            "maker_principal": caller.principal, "maker_key_id": caller.key_id, "ttl_s": _ttl_s()}, caller)
        if run_id is None:  # a concurrent prepare with the same key is committing its run
            raise Conflict("A request with this idempotency key is still in progress; retry shortly.",
                           title="Request in progress", headers={"Retry-After": "1"})
        row = repository.get(conn, run_id)
    logger.info("cycle run prepared", extra={"run_id": run_id, "kind": row["kind"], "programme": programme,
                                             "cycle": cycle,
                                             "vouchers": snap["voucher_count"], "maker": caller.principal})
    return _view(row), False


# --- approve ---------------------------------------------------------------------------------------

def _refuse(run: dict[str, Any], caller: Caller, reason: str, error: ProblemError,
            action: str = "approval_refused") -> ProblemError:
    """Record a refused approval or cancel (its own transaction: the refusal is audited); the error."""
    with db.transaction() as conn:
        repository.audit(conn, str(run["id"]), action, principal=caller.principal, key_id=caller.key_id,
                         from_status=run["status"], reference=caller.reference,
                         detail={"reason": reason, "maker_principal": run["maker_principal"],
                                 "maker_key_id": run["maker_key_id"]})
    logger.warning(f"cycle run {action.replace('_', ' ')}", extra={"run_id": str(run["id"]), "reason": reason,
                                                        "checker": caller.principal})
    return error


class _Refused(Exception):
    def __init__(self, run: dict[str, Any], reason: str, error: ProblemError) -> None:
        super().__init__(reason)
        self.run, self.reason, self.error = run, reason, error


def approve(programme: str, cycle: str, reviewed: ApproveRequest, caller: Caller) -> CycleRun:
    """Release the run the checker reviewed (four eyes), plan its chunks and enqueue them."""
    try:
        run_id = _approve(programme, cycle, reviewed, caller)
    except _Refused as refused:  # the approval's transaction is rolled back; the refusal is audited
        raise _refuse(refused.run, caller, refused.reason, refused.error) from None
    except DatabaseUnavailable as exc:
        if not isinstance(exc.__cause__, psycopg.errors.SerializationFailure):
            raise
        # The run changed (prepared again, superseded) after this approval's snapshot: what the
        # checker reviewed is not what is open now. Nothing was approved or enqueued.
        raise Conflict(f"Run {reviewed.run_id} of {programme} {cycle} changed while it was being approved; "
                       "review the cycle's run again.", title="Not the run reviewed",
                       extra={"run_id": str(reviewed.run_id)}) from None
    if run_id is None:
        return status(programme, cycle)
    enqueue(run_id, caller, within_s=_in_request_s())
    # Without progress: counting a national run's vouchers would cost the reply seconds (GET has it).
    return status(programme, cycle, run_id=run_id, with_progress=False)


def _approve(programme: str, cycle: str, reviewed: ApproveRequest, caller: Caller) -> str | None:
    """The approval's transaction; the run id to enqueue (None: the run is already complete)."""
    with db.transaction() as conn:
        # One snapshot for the fingerprint check and the plan: nothing added in between is planned.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        repository.expire_stale(conn, programme, cycle, reference=caller.reference)
        run = repository.open_run(conn, programme, cycle, lock=True)
        if run is None:
            last = repository.latest(conn, programme, cycle)
            if last is None:
                raise NotFound(f"No run of {programme} {cycle} has been prepared.")
            if last["status"] == "expired":
                raise Conflict(f"Run {last['id']} expired unapproved at {last['expires_at'].isoformat()}; "
                               "prepare it again.", title="Cycle run expired", extra={"run_id": str(last["id"])})
            if last["status"] == "completed" and str(last["id"]) == str(reviewed.run_id):
                return None
            raise Conflict(f"Run {last['id']} is {last['status']}; prepare a new one.", title="No run to approve",
                           extra={"run_id": str(last["id"]), "run_status": last["status"]})
        run_id = str(run["id"])
        same_key, same_principal = caller.key_id == run["maker_key_id"], caller.principal == run["maker_principal"]
        if same_key or same_principal:
            reason = "same key as the maker" if same_key else "same principal as the maker"
            raise _Refused(run, reason, Forbidden(
                f"Run {run_id} was prepared by this {'key' if same_key else 'principal'}; another principal "
                "holding cycles:approve must approve it (four eyes).", title="Maker cannot approve",
                extra={"run_id": run_id}))
        if run_id != str(reviewed.run_id) or run["fingerprint"] != reviewed.fingerprint:
            raise _Refused(run, "not the run reviewed", Conflict(
                f"The open run of {programme} {cycle} is {run_id} with fingerprint {run['fingerprint']}, not "
                f"the run {reviewed.run_id} / fingerprint {reviewed.fingerprint} named; review it and approve "
                "what you reviewed.", title="Not the run reviewed",
                extra={"run_id": run_id, "fingerprint": run["fingerprint"]}))
        if run["status"] == "awaiting_approval":
            # One pass over the run's vouchers plans the ledger and checks it is what was prepared;
            # a changed cycle is refused and the plan rolled back with the approval's transaction.
            snap = repository.plan(conn, run_id, programme, cycle, run["chunk_size"], run["selection"])
            if snap["fingerprint"] != run["fingerprint"]:
                raise _Refused(run, "cycle changed since preparation", Conflict(
                    f"{programme} {cycle} changed since run {run_id} was prepared ({snap['voucher_count']} "
                    f"eligible vouchers now, {run['voucher_count']} prepared); prepare it again.",
                    title="Cycle changed since preparation",
                    extra={"run_id": run_id, "prepared": run["voucher_count"], "now": snap["voucher_count"]}))
            chunks = snap["chunks"]
            repository.approve(conn, run_id, caller, detail={"chunks": chunks})
            logger.info("cycle run approved", extra={"run_id": run_id, "chunks": chunks, "maker": run["maker_principal"],
                                                     "checker": caller.principal})
            metrics.add_metric(name="CycleRunsApproved", unit="Count", value=1)
        elif caller.key_id != run["checker_key_id"]:
            raise Conflict(f"Run {run_id} is already approved (by {run['checker_principal']}).",
                           title="Already approved", extra={"run_id": run_id, "run_status": run["status"]})
    return run_id


# --- enqueue ---------------------------------------------------------------------------------------

def enqueue(run_id: str, caller: Caller, *, within_s: float | None = None) -> int:
    """Send the run's chunks that are not on the queue yet; resumable, each chunk processed once.

    Stops (leaving the rest planned) as soon as the run is paused. With ``within_s``, stops after
    that long and hands the rest to the queue side: one message whose consumer calls this again
    (:func:`request_enqueue`). Returns the chunks sent now.
    """
    sent_total = 0
    ends = None if within_s is None else time.monotonic() + within_s
    with db.autocommit() as conn:
        status_now = repository.run_status(conn, run_id)
        if status_now == "approved" and not repository.set_status(conn, run_id, "enqueuing", expected="approved",
                                                                  by=caller):
            status_now = repository.run_status(conn, run_id)  # paused (or moved on) meanwhile
        elif status_now == "approved":
            status_now = "enqueuing"
        while status_now == "enqueuing":
            if ends is not None and time.monotonic() >= ends:
                request_enqueue(run_id)
                break
            claimed = repository.claim_for_sending(conn, run_id, SEND_BATCH)
            if not claimed:
                break
            bodies = {str(no): json.dumps({"run_id": run_id, "chunk_no": no, "token": token, "voucher_ids": ids},
                                          separators=(",", ":")) for no, token, ids in claimed}
            accepted = queue.send_batch(bodies)
            repository.mark_enqueued(conn, run_id, [(no, token, accepted[str(no)]) for no, token, _ in claimed
                                                    if str(no) in accepted])
            if not accepted:
                raise ProblemError("The cycle queue took none of the run's messages; resume the run later.",
                                   status=503, title="Cycle queue refused", headers={"Retry-After": "5"})
            sent_total += len(accepted)
            status_now = repository.run_status(conn, run_id)
        if status_now == "enqueuing" and repository.chunks_left_to_enqueue(conn, run_id) == 0:
            with conn.transaction():  # only from enqueuing: a pause since the read above stands
                repository.set_status(conn, run_id, "running", expected="enqueuing", by=caller,
                                      detail={"messages_now": sent_total})
            status_now = repository.run_status(conn, run_id)
        # The last chunk may have finished while the run was still enqueuing (or paused): the
        # consumer completes only a running run, so the run is completed here then (its audit row
        # is the database's, in the same statement).
        if status_now == "running" and repository.complete_if_done(conn, run_id, reference=caller.reference):
            anchors.write_after(conn, kind="cycle-run", reference=run_id)
    if sent_total:
        logger.info("cycle run enqueued", extra={"run_id": run_id, "messages": sent_total})
        metrics.add_metric(name="CycleChunksEnqueued", unit="Count", value=sent_total)
    return sent_total


def request_enqueue(run_id: str) -> None:
    """Hand the rest of the run's enqueue to the queue side (the consumer continues it)."""
    if not queue.send_batch({"0": EnqueueMessage(run_id=run_id, enqueue=True).model_dump_json()}):
        raise ProblemError("The cycle queue refused the run's enqueue; resume the run later.",
                           status=503, title="Cycle queue refused", headers={"Retry-After": "5"})


# --- pause / resume --------------------------------------------------------------------------------

def _started_run(conn: Any, programme: str, cycle: str) -> dict[str, Any]:
    """The cycle's run under way (locked): approved and not finished, else 404 / 409."""
    run = repository.open_run(conn, programme, cycle, lock=True)
    if run is None:
        raise NotFound(f"No run of {programme} {cycle} is under way.")
    if run["status"] == "awaiting_approval":
        raise Conflict(f"Run {run['id']} is awaiting approval; it has not started.", title="Not started",
                       extra={"run_id": str(run["id"]), "run_status": run["status"]})
    return run


def pause(programme: str, cycle: str, caller: Caller) -> CycleRun:
    with db.transaction() as conn:
        run = _started_run(conn, programme, cycle)
        run_id = str(run["id"])
        if run["status"] != "paused":
            repository.set_status(conn, run_id, "paused", expected=run["status"], by=caller)
            logger.info("cycle run paused", extra={"run_id": run_id, "by": caller.principal})
    return status(programme, cycle, run_id=run_id)


def resume(programme: str, cycle: str, caller: Caller) -> CycleRun:
    with db.transaction() as conn:
        run = _started_run(conn, programme, cycle)
        run_id = str(run["id"])
        if run["status"] == "paused":
            parked = repository.unpark(conn, run_id)
            target = "enqueuing" if repository.chunks_left_to_enqueue(conn, run_id) else "running"
            repository.set_status(conn, run_id, target, expected="paused", by=caller, detail={"parked_chunks": parked})
            logger.info("cycle run resumed", extra={"run_id": run_id, "by": caller.principal, "parked": parked})
    enqueue(run_id, caller, within_s=_in_request_s())  # also finishes an enqueue a crash interrupted
    return status(programme, cycle, run_id=run_id)


def cancel(programme: str, cycle: str, caller: Caller) -> CycleRun:
    """``paused → cancelled`` for good, by a principal who neither made nor paused the run (four eyes,
    as for approval). What the run did not send stays issued for a later run; a pending voucher
    is finished by reconciliation (smartpay.resend's lookups), never re-sent by this run."""
    try:
        run_id = _cancel(programme, cycle, caller)
    except _Refused as refused:
        raise _refuse(refused.run, caller, refused.reason, refused.error, "cancel_refused") from None
    return status(programme, cycle, run_id=run_id)


def _cancel(programme: str, cycle: str, caller: Caller) -> str:
    with db.transaction() as conn:
        run = _started_run(conn, programme, cycle)
        run_id = str(run["id"])
        if run["status"] != "paused":
            raise Conflict(f"Run {run_id} is {run['status']}; only a paused run can be cancelled (pause it first).",
                           title="Run not paused", extra={"run_id": run_id, "run_status": run["status"]})
        paused_by = repository.paused_by(conn, run_id)
        made = caller.key_id == run["maker_key_id"] or caller.principal == run["maker_principal"]
        if made or caller.principal == paused_by:
            raise _Refused(run, "same principal as the maker" if made else "same principal as who paused it",
                           Forbidden(f"Run {run_id} was {'prepared' if made else 'paused'} by this principal; another "
                                     "principal holding cycles:approve must cancel it (four eyes).",
                                     title="Cancel needs four eyes", extra={"run_id": run_id}))
        repository.cancel(conn, run_id, caller, detail={"maker_principal": run["maker_principal"],
                                                        "paused_by": paused_by})
    logger.info("cycle run cancelled", extra={"run_id": run_id, "by": caller.principal})
    metrics.add_metric(name="CycleRunsCancelled", unit="Count", value=1)
    return run_id


# --- status ----------------------------------------------------------------------------------------

def status(programme: str, cycle: str, *, run_id: str | None = None, with_progress: bool = True) -> CycleRun:
    """The run (the cycle's latest unless ``run_id``) and, once approved (and ``with_progress``), its progress."""
    with db.transaction() as conn:
        repository.expire_stale(conn, programme, cycle)
        row = repository.get(conn, run_id) if run_id else repository.latest(conn, programme, cycle)
        if row is None:
            raise NotFound(f"No run of {programme} {cycle} has been prepared.")
        progress = _progress(conn, str(row["id"])) if with_progress and row["approved_at"] is not None else None
        return _view(row, progress)
