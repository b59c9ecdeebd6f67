"""Cycle runs in-process, with the interleavings forced at the named points: pause, resume,
enqueue and park never undo one another, a run can be cancelled (paused, four eyes), and a run
always finishes (a pending voucher that may not be re-sent is looked up at Buffr).

The disburse code runs as its own role against the test database, the cycle queue on moto (no
poller: each test hands a chunk's message to the consumer itself) and the Buffr simulator.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from smartpay_tools.data import bulk_seed
from tests import factories
from tests.fixtures_disburse import lambda_context

pytestmark = pytest.mark.integration

PROGRAMME = "old_age"
QUEUE = "smartpay-cycle-local"


@pytest.fixture()
def runs(disburse_env: dict, local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The cycle-run service and consumer, wired to the cycle queue (no poller: tests deliver)."""
    monkeypatch.setenv("CYCLE_QUEUE_URL", local_stack.queue_urls[QUEUE])
    monkeypatch.delenv("BUFFR_MAX_RATE_PER_S", raising=False)
    monkeypatch.setenv("CYCLE_QUEUE_MAX_CONCURRENCY", "1")  # one consumer: a run of up to 500 is one chunk
    from disburse.cycle_run import consumer, repository, service

    yield type("Runs", (), {"service": service, "repository": repository, "consumer": consumer})


def _seed(pg: psycopg.Connection[Any], n: int, cycle: str) -> None:
    bulk_seed.issued_vouchers(pg, n, cycle=cycle, programme=PROGRAMME,
                              first=factories._rng.randrange(10**9, 9 * 10**10), reference="test")


def _caller(service: Any, who: str) -> Any:
    return service.Caller(principal=f"{who}-principal", key_id=f"{who}-key", reference=f"req-{uuid.uuid4()}")


def _prepare(runs: Any, cycle: str) -> str:
    run, _ = runs.service.prepare(PROGRAMME, cycle, f"prep-{uuid.uuid4()}", _caller(runs.service, "maker"))
    return str(run.run_id)


def _approve(runs: Any, cycle: str) -> None:
    """Approve the cycle's open run as the checker, naming what was reviewed (its id and fingerprint)."""
    from disburse.cycle_run.models import ApproveRequest

    run = runs.service.status(PROGRAMME, cycle)
    runs.service.approve(PROGRAMME, cycle, ApproveRequest(run_id=run.run_id, fingerprint=run.fingerprint),
                         _caller(runs.service, "checker"))


def _approved(runs: Any, pg: psycopg.Connection[Any], cycle: str, n: int) -> str:
    """A run of ``n`` fresh vouchers, prepared and approved: its chunk's message is on the queue."""
    _seed(pg, n, cycle)
    run_id = _prepare(runs, cycle)
    _approve(runs, cycle)
    return run_id


def _first(pg: psycopg.Connection[Any], cycle: str) -> dict[str, Any]:
    return pg.execute("SELECT id::text, beneficiary_id, amount_cents FROM vouchers WHERE cycle = %s ORDER BY id "
                      "LIMIT 1", (cycle,)).fetchone()


def _record(pg: psycopg.Connection[Any], run_id: str, chunk_no: int = 0) -> SQSRecord:
    """The chunk's current message, as SQS hands it to the consumer."""
    token = pg.execute("SELECT token::text FROM cycle_run_chunks WHERE run_id = %s AND chunk_no = %s",
                       (run_id, chunk_no)).fetchone()["token"]
    ids = [r["id"] for r in pg.execute("SELECT voucher_id::text AS id FROM cycle_run_items WHERE run_id = %s "
                                       "AND chunk_no = %s ORDER BY voucher_id", (run_id, chunk_no))]
    body = json.dumps({"run_id": run_id, "chunk_no": chunk_no, "token": token, "voucher_ids": ids})
    return SQSRecord({"messageId": str(uuid.uuid4()), "body": body, "attributes": {}, "messageAttributes": {},
                      "eventSource": "aws:sqs", "receiptHandle": "r"})


def _run(pg: psycopg.Connection[Any], run_id: str) -> dict[str, Any]:
    return pg.execute("SELECT status FROM cycle_runs WHERE id = %s", (run_id,)).fetchone()


def _actions(pg: psycopg.Connection[Any], run_id: str) -> list[str]:
    return [r["action"] for r in pg.execute("SELECT action FROM cycle_run_events WHERE run_id = %s ORDER BY id",
                                            (run_id,))]


def _chunks(pg: psycopg.Connection[Any], run_id: str) -> list[str]:
    return [r["state"] for r in pg.execute("SELECT state FROM cycle_run_chunks WHERE run_id = %s ORDER BY chunk_no",
                                           (run_id,))]


def _statuses(pg: psycopg.Connection[Any], cycle: str) -> dict[str, int]:
    return {r["status"]: r["n"] for r in pg.execute(
        "SELECT status, count(*) AS n FROM vouchers WHERE cycle = %s GROUP BY status", (cycle,))}


# --- races -----------------------------------------------------------------------------------------

def test_a_pause_while_enqueue_finishes_is_not_undone_by_enqueue(runs: Any, pg: psycopg.Connection[Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cycle = "2027-01"
    _seed(pg, 5, cycle)
    run_id = _prepare(runs, cycle)
    original = runs.repository.chunks_left_to_enqueue

    def paused_meanwhile(conn: Any, rid: str) -> int:
        # the named point: enqueue has read "enqueuing" and sent every chunk; a pause commits now
        if _run(pg, rid)["status"] == "enqueuing":
            runs.service.pause(PROGRAMME, cycle, _caller(runs.service, "operator"))
        return original(conn, rid)

    monkeypatch.setattr(runs.repository, "chunks_left_to_enqueue", paused_meanwhile)
    _approve(runs, cycle)
    assert _run(pg, run_id)["status"] == "paused"  # not turned back to running by enqueue
    assert _actions(pg, run_id) == ["prepared", "approved", "enqueuing", "paused"]


def test_a_chunk_parked_after_a_resume_is_sent_not_left_parked(runs: Any, pg: psycopg.Connection[Any],
                                                                local_stack: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cycle = "2027-02"
    run_id = _approved(runs, pg, cycle, 5)
    runs.service.pause(PROGRAMME, cycle, _caller(runs.service, "operator"))
    record = _record(pg, run_id)
    original = runs.repository.park

    def resumed_meanwhile(conn: Any, rid: str, chunk_no: int, token: str) -> Any:
        # the named point: the consumer saw the run paused and is about to park; a resume commits now
        runs.service.resume(PROGRAMME, cycle, _caller(runs.service, "operator"))
        monkeypatch.setattr(runs.repository, "park", original)
        return original(conn, rid, chunk_no, token)

    monkeypatch.setattr(runs.repository, "park", resumed_meanwhile)
    with pytest.raises(runs.consumer.ChunkNotSettled):  # the message comes back (SQS redelivers it)
        runs.consumer.process_chunk(record, lambda_context())
    assert _run(pg, run_id)["status"] == "running" and _chunks(pg, run_id) == ["enqueued"]
    runs.consumer.process_chunk(record, lambda_context())  # the redelivery
    assert _run(pg, run_id)["status"] == "completed" and _chunks(pg, run_id) == ["done"]
    assert _statuses(pg, cycle) == {"active": 5}
    stats = local_stack.buffr.stats()
    assert stats["credits"] == 5 and stats["double_credited"] == {}
    assert _actions(pg, run_id) == ["prepared", "approved", "enqueuing", "enqueued", "paused", "resumed",
                                    "completed"]


def test_the_database_refuses_a_parked_chunk_in_a_running_run_and_a_run_resumed_by_no_one(runs: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2027-03"
    run_id = _approved(runs, pg, cycle, 3)
    assert _run(pg, run_id)["status"] == "running"
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE cycle_run_chunks SET state = 'parked' WHERE run_id = %s", (run_id,))
    runs.service.pause(PROGRAMME, cycle, _caller(runs.service, "operator"))
    pg.execute("UPDATE cycle_run_chunks SET state = 'parked' WHERE run_id = %s", (run_id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="parked chunks"), factories.acting_as(pg):
        pg.execute("UPDATE cycle_runs SET status = 'running' WHERE id = %s", (run_id,))
    assert _chunks(pg, run_id) == ["parked"] and _run(pg, run_id)["status"] == "paused"
    pg.execute("UPDATE cycle_run_chunks SET state = 'planned' WHERE run_id = %s", (run_id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="paused -> enqueuing without an actor"):
        pg.execute("UPDATE cycle_runs SET status = 'enqueuing' WHERE id = %s", (run_id,))  # resumed by no one
    with pytest.raises(psycopg.errors.CheckViolation, match="only through a resume"), pg.transaction():
        # resumed by someone, but with the resume's event gone: refused at commit
        with factories.acting_as(pg):
            pg.execute("UPDATE cycle_runs SET status = 'enqueuing' WHERE id = %s", (run_id,))
        pg.execute("ALTER TABLE cycle_run_events DISABLE TRIGGER USER")
        pg.execute("DELETE FROM cycle_run_events WHERE run_id = %s AND action = 'resumed'", (run_id,))
        pg.execute("ALTER TABLE cycle_run_events ENABLE TRIGGER USER")
    assert _run(pg, run_id)["status"] == "paused" and "resumed" not in _actions(pg, run_id)
    runs.service.resume(PROGRAMME, cycle, _caller(runs.service, "operator"))
    assert _run(pg, run_id)["status"] == "running"
    assert _actions(pg, run_id)[-3:] == ["paused", "resumed", "enqueued"]


# --- a run always finishes -------------------------------------------------------------------------

def _claim_without_sending(pg: psycopg.Connection[Any], voucher_id: str, run_id: str) -> None:
    """issued → pending as a consumer's claim, then the process died before its call to Buffr."""
    from smartpay.transitions import transition

    assert transition(pg, voucher_id, "pending", source="disburse", reference=f"cycle-run:{run_id}").applied


def test_a_pending_voucher_of_a_beneficiary_who_died_is_cancelled_and_the_run_completes(
        runs: Any, pg: psycopg.Connection[Any], local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUFFR_RESEND_GRACE_S", "0")  # the claim is old enough to ask Buffr about it
    cycle = "2027-04"
    run_id = _approved(runs, pg, cycle, 5)
    dead = _first(pg, cycle)
    _claim_without_sending(pg, dead["id"], run_id)
    pg.execute("UPDATE beneficiaries SET status = 'deceased' WHERE id = %s", (dead["beneficiary_id"],))

    runs.consumer.process_chunk(_record(pg, run_id), lambda_context())  # settles: no redelivery needed

    assert _run(pg, run_id)["status"] == "completed" and _chunks(pg, run_id) == ["done"]
    assert _statuses(pg, cycle) == {"active": 4, "cancelled": 1}
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (dead["id"],)).fetchone()["status"] == "cancelled"
    stats = local_stack.buffr.stats(detail=True)
    assert dead["id"] not in stats["credits_per_voucher"] and stats["credits"] == 4
    assert stats["calls"]["status"] == 1 and stats["calls"]["disburse"] == 4
    trail = pg.execute("SELECT from_status, to_status, source, detail FROM voucher_events WHERE voucher_id = %s ORDER BY id",
                       (dead["id"],)).fetchall()
    assert [(t["from_status"], t["to_status"], t["source"]) for t in trail] == [
        (None, "issued", "operator"), ("issued", "pending", "disburse"),
        ("pending", "pending", "registry"),  # the registry's review reason: it may have reached Buffr
        ("pending", "cancelled", "disburse")]
    assert trail[2]["detail"] == {"review_reason": "beneficiary is deceased after the voucher was sent to Buffr: "
                                                   "check it with Buffr"}
    assert trail[-1]["detail"]["looked_up"] is True and trail[-1]["detail"]["buffr_status"] is None
    assert _actions(pg, run_id)[-1] == "completed"
    # the cycle is free again: a voucher issued since is prepared in a new run
    factories.voucher(pg, factories.beneficiary(pg)["id"], cycle=cycle)
    again = runs.service.prepare(PROGRAMME, cycle, f"prep-{uuid.uuid4()}", _caller(runs.service, "maker"))[0]
    assert again.status == "awaiting_approval" and again.voucher_count == 1 and str(again.run_id) != run_id


@pytest.mark.parametrize(("change", "settled"), [
    ("UPDATE beneficiaries SET status = 'suspended' WHERE id = %(b)s", "pending"),  # cannot be held again
    ("UPDATE vouchers SET expires_at = issued_at + interval '1 millisecond' WHERE id = %(v)s", "expired"),
])
def test_a_pending_voucher_that_may_not_be_sent_never_holds_its_run_open(
        runs: Any, pg: psycopg.Connection[Any], local_stack: Any, monkeypatch: pytest.MonkeyPatch, change: str,
        settled: str) -> None:
    monkeypatch.setenv("BUFFR_RESEND_GRACE_S", "0")
    cycle = "2027-09"
    run_id = _approved(runs, pg, cycle, 3)
    v = _first(pg, cycle)
    _claim_without_sending(pg, v["id"], run_id)
    pg.execute(change, {"b": v["beneficiary_id"], "v": v["id"]})
    runs.consumer.process_chunk(_record(pg, run_id), lambda_context())
    assert _run(pg, run_id)["status"] == "completed"
    assert _statuses(pg, cycle) == {"active": 2, settled: 1}
    stats = local_stack.buffr.stats(detail=True)
    assert v["id"] not in stats["credits_per_voucher"] and stats["calls"]["disburse"] == 2


def test_a_pending_voucher_buffr_credited_is_recorded_active_not_sent_again(
        runs: Any, pg: psycopg.Connection[Any], local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUFFR_RESEND_GRACE_S", "0")
    cycle = "2027-10"
    run_id = _approved(runs, pg, cycle, 2)
    v = _first(pg, cycle)
    _claim_without_sending(pg, v["id"], run_id)
    local_stack.buffr.load([{"voucher_id": v["id"], "amount": v["amount_cents"], "status": "active"}])  # it got there
    runs.consumer.process_chunk(_record(pg, run_id), lambda_context())
    assert _statuses(pg, cycle) == {"active": 2} and _run(pg, run_id)["status"] == "completed"
    stats = local_stack.buffr.stats()
    assert stats["calls"]["disburse"] == 1 and stats["calls"]["status"] == 1
    row = pg.execute("SELECT buffr_delivery_id FROM vouchers WHERE id = %s", (v["id"],)).fetchone()
    assert row["buffr_delivery_id"] == local_stack.buffr.voucher(v["id"])["deliveryId"]


def test_a_completion_is_never_committed_without_its_audit_row(runs: Any, pg: psycopg.Connection[Any],
                                                               local_stack: Any) -> None:
    cycle = "2027-11"
    run_id = _approved(runs, pg, cycle, 2)
    # the named point: the run was just completed and its audit row, written by the database in the
    # same statement, fails to be written
    pg.execute("""CREATE FUNCTION test_completed_row_fails() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN RAISE EXCEPTION 'the audit row could not be written'; END; $$""")
    pg.execute("""CREATE TRIGGER test_completed_row_fails BEFORE INSERT ON cycle_run_events FOR EACH ROW
                  WHEN (NEW.action = 'completed') EXECUTE FUNCTION test_completed_row_fails()""")
    try:
        with pytest.raises(psycopg.errors.RaiseException, match="the audit row could not be written"):
            runs.consumer.process_chunk(_record(pg, run_id), lambda_context())
    finally:
        pg.execute("DROP TRIGGER test_completed_row_fails ON cycle_run_events")
        pg.execute("DROP FUNCTION test_completed_row_fails()")
    assert _run(pg, run_id)["status"] == "running" and _chunks(pg, run_id) == ["enqueued"]
    assert "completed" not in _actions(pg, run_id)
    runs.consumer.process_chunk(_record(pg, run_id), lambda_context())  # the redelivery completes it
    assert _run(pg, run_id)["status"] == "completed" and _actions(pg, run_id)[-1] == "completed"
    assert _statuses(pg, cycle) == {"active": 2}
    assert local_stack.buffr.stats()["credits"] == 2 and local_stack.buffr.stats()["double_credited"] == {}


def _blocked_or_done(pg: psycopg.Connection[Any], worker: threading.Thread) -> None:
    """Until ``worker`` has finished or waits on a row lock in this database (bounded)."""
    for _ in range(600):
        if not worker.is_alive():
            return
        if pg.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                      "AND wait_event_type = 'Lock'").fetchone()["n"]:
            return
        time.sleep(0.05)
    raise AssertionError("the second consumer neither finished nor waited for a lock in 30 s")


def test_two_consumers_finishing_the_last_two_chunks_at_once_complete_the_run(
        runs: Any, pg: psycopg.Connection[Any], local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLE_QUEUE_MAX_CONCURRENCY", "2")  # a run of 2 is two chunks of one voucher
    cycle = "2027-12"
    run_id = _approved(runs, pg, cycle, 2)
    assert _chunks(pg, run_id) == ["enqueued", "enqueued"]
    second = _record(pg, run_id, 1)
    original = runs.repository.finish_chunk
    errors: list[BaseException] = []

    def deliver_second() -> None:
        try:
            runs.consumer.process_chunk(second, lambda_context())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=deliver_second)

    def second_finishes_meanwhile(conn: Any, rid: str, chunk_no: int, token: str, **kw: Any) -> bool:
        completed = original(conn, rid, chunk_no, token, **kw)
        if chunk_no == 0:
            # the named point: chunk 0 is marked done, its transaction not committed yet; the other
            # consumer finishes chunk 1 now (or waits for this one's lock on the run)
            worker.start()
            _blocked_or_done(pg, worker)
        return completed

    monkeypatch.setattr(runs.repository, "finish_chunk", second_finishes_meanwhile)
    runs.consumer.process_chunk(_record(pg, run_id, 0), lambda_context())
    worker.join(60)
    assert not worker.is_alive() and errors == []
    assert _chunks(pg, run_id) == ["done", "done"]
    assert _run(pg, run_id)["status"] == "completed"
    assert _actions(pg, run_id).count("completed") == 1
    assert _statuses(pg, cycle) == {"active": 2}
    assert local_stack.buffr.stats()["credits"] == 2


def _received(sqs: Any, url: str, run_id: str, wait_s: int) -> SQSRecord | None:
    """The run's chunk message as SQS hands it out now (others on the shared queue are left visible)."""
    ends = time.monotonic() + wait_s
    while time.monotonic() < ends:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            if json.loads(m["Body"]).get("run_id") == run_id:
                return SQSRecord({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                                  "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs"})
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    return None


def test_a_chunk_the_deadline_cut_short_is_delivered_again_at_once(runs: Any, pg: psycopg.Connection[Any],
                                                                    local_stack: Any) -> None:
    cycle = "2028-01"
    run_id = _approved(runs, pg, cycle, 3)
    sqs, url = local_stack.sqs(), local_stack.queue_urls[QUEUE]
    first = _received(sqs, url, run_id, 10)
    assert first is not None
    # the named point: less than one attempt fits before the invocation's deadline
    with pytest.raises(runs.consumer.ChunkCutShort):
        runs.consumer.process_chunk(first, lambda_context(seconds=0.5))
    assert _statuses(pg, cycle) == {"issued": 3} and _run(pg, run_id)["status"] == "running"
    # visible again within seconds, not after the queue's visibility timeout (180 s)
    again = _received(sqs, url, run_id, 15)
    assert again is not None and again.message_id == first.message_id
    runs.consumer.process_chunk(again, lambda_context())
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again.receipt_handle)
    assert _run(pg, run_id)["status"] == "completed" and _statuses(pg, cycle) == {"active": 3}
    assert local_stack.buffr.stats()["credits"] == 3 and local_stack.buffr.stats()["calls"]["disburse"] == 3


# --- re-sends and Buffr's key retention ------------------------------------------------------------

def _timed_out_after_credit(runs: Any, pg: psycopg.Connection[Any], sim: Any, cycle: str, n: int) -> str:
    """A run whose every first call credited at Buffr but timed out: all ``n`` stay pending."""
    sim.configure(timeout_rate=1.0, timeout_after_credit=True, hang_ms=2500, key_retention_s=5)
    run_id = _approved(runs, pg, cycle, n)
    with pytest.raises(runs.consumer.ChunkNotSettled):
        runs.consumer.process_chunk(_record(pg, run_id), lambda_context())
    assert _statuses(pg, cycle) == {"pending": n} and sim.stats()["credits"] == n
    sim.configure(timeout_rate=0.0)
    return run_id


def test_a_resend_after_buffr_forgot_the_key_credits_nothing_twice(runs: Any, pg: psycopg.Connection[Any],
                                                                   local_stack: Any, disburse_env: dict) -> None:
    disburse_env["reconfigure"](BUFFR_MAX_ATTEMPTS="1", BUFFR_RESEND_GRACE_S="2")
    sim = local_stack.buffr
    cycle = "2027-05"
    run_id = _timed_out_after_credit(runs, pg, sim, cycle, 4)
    # (the first invocation's own re-send rounds went out while Buffr still kept the keys)
    before = sim.stats()["calls"]
    time.sleep(10)  # the re-send comes after Buffr's key retention (5 s) and the grace period (2 s)
    runs.consumer.process_chunk(_record(pg, run_id), lambda_context())  # SQS's redelivery
    stats = sim.stats()
    assert stats["credits"] == 4 and stats["double_credited"] == {}
    assert stats["calls"]["disburse"] == before["disburse"]  # nothing sent again past the retention...
    assert stats["calls"]["status"] - before.get("status", 0) == 4  # ...each looked up instead
    assert _statuses(pg, cycle) == {"active": 4} and _run(pg, run_id)["status"] == "completed"


def test_a_rejection_of_a_resend_is_looked_up_not_failed(runs: Any, pg: psycopg.Connection[Any],
                                                         local_stack: Any, disburse_env: dict) -> None:
    # a long grace period: the re-send goes out, Buffr has forgotten the key and refuses the voucher
    disburse_env["reconfigure"](BUFFR_MAX_ATTEMPTS="1", BUFFR_RESEND_GRACE_S="3600")
    sim = local_stack.buffr
    cycle = "2027-06"
    run_id = _timed_out_after_credit(runs, pg, sim, cycle, 2)
    ids = [r["id"] for r in pg.execute("SELECT id::text FROM vouchers WHERE cycle = %s", (cycle,))]
    for v in ids:
        sim.set_voucher(v, reject="voucher already disbursed")
    time.sleep(6)  # past the key retention
    runs.consumer.process_chunk(_record(pg, run_id), lambda_context())
    stats = sim.stats()
    assert stats["credits"] == 2 and stats["double_credited"] == {} and stats["rejected"] == 2
    assert _statuses(pg, cycle) == {"active": 2} and _run(pg, run_id)["status"] == "completed"


# --- cancel ----------------------------------------------------------------------------------------

def test_a_run_is_cancelled_only_when_paused_and_only_by_another_principal(runs: Any, pg: psycopg.Connection[Any],
                                                                          local_stack: Any) -> None:
    from smartpay.errors import Conflict, Forbidden

    cycle = "2027-07"
    run_id = _approved(runs, pg, cycle, 3)
    with pytest.raises(Conflict):  # running: pause first
        runs.service.cancel(PROGRAMME, cycle, _caller(runs.service, "checker"))
    runs.service.pause(PROGRAMME, cycle, _caller(runs.service, "operator"))
    for who in ("maker", "operator"):  # who prepared it, who paused it
        with pytest.raises(Forbidden):
            runs.service.cancel(PROGRAMME, cycle, _caller(runs.service, who))
    assert _run(pg, run_id)["status"] == "paused"
    cancelled = runs.service.cancel(PROGRAMME, cycle, _caller(runs.service, "checker"))
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert _actions(pg, run_id) == ["prepared", "approved", "enqueuing", "enqueued", "paused", "cancel_refused",
                                    "cancel_refused", "cancelled"]
    row = pg.execute("SELECT canceller_principal, canceller_key_id FROM cycle_runs WHERE id = %s", (run_id,)).fetchone()
    assert row == {"canceller_principal": "checker-principal", "canceller_key_id": "checker-key"}
    runs.consumer.process_chunk(_record(pg, run_id), lambda_context())  # its message: parked, nothing sent
    assert _chunks(pg, run_id) == ["parked"] and local_stack.buffr.stats()["calls"].get("disburse", 0) == 0
    assert _statuses(pg, cycle) == {"issued": 3}  # what it did not send is left for a later run
    again = runs.service.prepare(PROGRAMME, cycle, f"prep-{uuid.uuid4()}", _caller(runs.service, "maker"))[0]
    assert again.voucher_count == 3 and str(again.run_id) != run_id


def test_the_database_refuses_a_canceller_who_is_the_maker(runs: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2027-08"
    _seed(pg, 1, cycle)
    run_id = _prepare(runs, cycle)
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE cycle_runs SET canceller_principal = maker_principal, canceller_key_id = 'other' "
                   "WHERE id = %s", (run_id,))
