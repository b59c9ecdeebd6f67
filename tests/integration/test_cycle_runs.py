"""Cycle runs through the local stack: gateway → authorizer → disburse function → PostgreSQL, the
cycle queue on moto with the template's event source polled as Lambda does, the Buffr simulator.

The stack here is the template with short timings (a 5 s function timeout, a 7 s visibility
timeout, 100-voucher chunks, two concurrent consumers), so redeliveries happen within seconds.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from smartpay_tools.data import bulk_seed
from tests import factories

pytestmark = pytest.mark.integration

PROGRAMME = "old_age"
ALARM = "smartpay-cycle-dead-letters-local"
FAST = {"BUFFR_CONNECT_TIMEOUT_S": "1", "BUFFR_READ_TIMEOUT_S": "1.5", "BUFFR_MAX_ATTEMPTS": "6",
        "BUFFR_BACKOFF_BASE_MS": "10", "BUFFR_BACKOFF_CAP_MS": "50", "DISBURSE_DEADLINE_MARGIN_S": "0.3",
        "DB_POOL_SIZE": "3"}


@pytest.fixture(scope="module")
def cycle_stack(pg_url: str) -> Iterator[Any]:
    from smartpay_tools.local.gateway import Gateway, serve
    from smartpay_tools.local.services import free_port
    from smartpay_tools.local.stack import LocalStack

    stack = LocalStack(database_url=pg_url, max_concurrency=4, simulator_port=0, webhook_knobs={"enabled": False},
                       extra_env={**FAST, "BUFFR_MAX_RATE_PER_S": "1000"},
                       template_parameters={"DisburseFunctionTimeout": "5", "CycleQueueVisibilityTimeout": "7",
                                            "CycleMaxReceiveCount": "3", "CycleChunkSize": "100",
                                            "CycleQueueMaxConcurrency": "2", "CycleQueueBatchSize": "1"})
    stack.start_services(migrate=False)
    port = free_port()
    server = serve(Gateway(stack), port=port)
    stack.url = f"http://127.0.0.1:{port}"
    stack.start_event_sources()
    yield stack
    server.shutdown()
    stack.stop()


@pytest.fixture()
def run_env(cycle_stack: Any, pg: psycopg.Connection[Any]) -> Iterator[Any]:
    """A clean database and simulator, Buffr's rate at 1000/s unless a test sets it."""
    cycle_stack.buffr.reset(latency_ms=2)
    _set_rate(cycle_stack, 1000)
    yield cycle_stack
    cycle_stack.buffr.reset()


def _set_rate(stack: Any, rate: float) -> None:
    if stack.extra_env.get("BUFFR_MAX_RATE_PER_S") != str(rate):
        stack.extra_env["BUFFR_MAX_RATE_PER_S"] = str(rate)
        stack.stop_event_sources()
        stack.restart_function("DisburseFunction")
        stack.start_event_sources()


def _keys(stack: Any) -> dict[str, str]:
    local = stack.local
    return {"operator": local["OperatorApiKey"], "payments": local["PaymentsApiKey"],
            "supervisor": local["SupervisorApiKey"]}


def _seed(pg: psycopg.Connection[Any], n: int, cycle: str) -> None:
    """``n`` active beneficiaries of the programme, each with an issued voucher for ``cycle``."""
    bulk_seed.issued_vouchers(pg, n, cycle=cycle, programme=PROGRAMME,
                              first=factories._rng.randrange(10**9, 9 * 10**10), reference="test")


def _call(stack: Any, method: str, cycle: str, action: str = "", key: str = "operator",
          idempotency_key: str | None = None, body: dict[str, Any] | None = None) -> httpx.Response:
    """One call; an approval without ``body`` names the cycle's latest run as the checker reads it."""
    headers = {"x-api-key": _keys(stack)[key]}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    if action == "approve" and body is None:
        run = _call(stack, "GET", cycle, key="supervisor").json()
        body = {"run_id": run["run_id"], "fingerprint": run["fingerprint"]}
    path = f"/api/v1/cycles/{PROGRAMME}/{cycle}/disbursement" + (f"/{action}" if action else "")
    return httpx.request(method, stack.url + path, headers=headers, json=body, timeout=30)


def _start(stack: Any, cycle: str, *, maker: str = "operator", checker: str = "supervisor",
           key: str | None = None) -> dict[str, Any]:
    prepared = _call(stack, "POST", cycle, key=maker, idempotency_key=key or f"prep-{uuid.uuid4()}")
    assert prepared.status_code in {200, 201}, prepared.text
    approved = _call(stack, "POST", cycle, "approve", key=checker)
    assert approved.status_code == 202, approved.text
    return approved.json()


def _wait(stack: Any, cycle: str, status: str = "completed", timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = _call(stack, "GET", cycle).json()
        if run["status"] == status:
            return run
        if time.monotonic() > deadline:
            return {**run, "pollers": [p.stats for p in stack.pollers]}
        time.sleep(0.25)


def _wait_for_sends(stack: Any, calls: int) -> None:
    deadline = time.monotonic() + 30
    while stack.buffr.stats()["calls"].get("disburse", 0) < calls and time.monotonic() < deadline:
        time.sleep(0.05)


def _statuses(pg: psycopg.Connection[Any], cycle: str) -> dict[str, int]:
    return {r["status"]: r["n"] for r in pg.execute(
        "SELECT status, count(*) AS n FROM vouchers WHERE cycle = %s GROUP BY status", (cycle,))}


def _events(pg: psycopg.Connection[Any], run_id: str) -> list[dict[str, Any]]:
    return pg.execute("SELECT action, principal, key_id, detail FROM cycle_run_events WHERE run_id = %s ORDER BY id",
                      (run_id,)).fetchall()


def _messages(stack: Any, queue: str) -> int:
    attrs = stack.sqs().get_queue_attributes(QueueUrl=stack.queue_urls[queue], AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


# --- four eyes ------------------------------------------------------------------------------------

def test_a_run_approved_by_its_maker_is_refused_and_sends_nothing(run_env: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-01"
    _seed(pg, 20, cycle)
    prepared = _call(run_env, "POST", cycle, key="operator", idempotency_key="four-eyes-1")
    assert prepared.status_code == 201, prepared.text
    run = prepared.json()
    assert run["status"] == "awaiting_approval" and run["voucher_count"] == 20
    assert run["total_amount_cents"] == 20 * 140000
    assert sum(r["vouchers"] for r in run["region_totals"]) == 20

    # another key of the same principal (operator), holding cycles:approve → 403
    same_principal = _call(run_env, "POST", cycle, "approve", key="payments")
    assert same_principal.status_code == 403, same_principal.text
    assert same_principal.headers["content-type"].startswith("application/problem+json")
    # the very key that prepared it → 403
    mine = _call(run_env, "POST", cycle, key="payments", idempotency_key="four-eyes-2")
    assert mine.status_code == 201
    same_key = _call(run_env, "POST", cycle, "approve", key="payments")
    assert same_key.status_code == 403 and "key" in same_key.json()["detail"]

    time.sleep(1)  # the pollers would have picked up anything enqueued
    assert run_env.buffr.stats()["calls"].get("disburse", 0) == 0
    assert _statuses(pg, cycle) == {"issued": 20}
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_items") == 0
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_chunks") == 0
    assert _messages(run_env, "smartpay-cycle-local") == 0
    refusals = [(e["principal"], e["key_id"], e["detail"]["reason"]) for e in _events(pg, run["run_id"])
                if e["action"] == "approval_refused"]
    assert refusals == [("operator", "payments-local", "same principal as the maker")]
    second = mine.json()["run_id"]
    assert [(e["action"], e["principal"], e["key_id"]) for e in _events(pg, second)] == [
        ("prepared", "operator", "payments-local"), ("approval_refused", "operator", "payments-local")]
    # the first run was superseded by the second preparation, by the principal who prepared again
    assert [e["action"] for e in _events(pg, run["run_id"])] == ["prepared", "approval_refused", "superseded"]


def test_the_database_refuses_a_checker_who_is_the_maker(run_env: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-02"
    _seed(pg, 1, cycle)
    run_id = _call(run_env, "POST", cycle, idempotency_key="db-four-eyes").json()["run_id"]
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("""UPDATE cycle_runs SET status = 'approved', checker_principal = 'supervisor',
                             checker_key_id = maker_key_id, approved_at = now() WHERE id = %s""", (run_id,))


def test_a_cycle_changed_after_preparation_is_refused_until_prepared_again(run_env: Any,
                                                                          pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-03"
    _seed(pg, 10, cycle)
    first = _call(run_env, "POST", cycle, idempotency_key="changed-1").json()
    _seed(pg, 1, cycle)  # a voucher added after preparation
    refused = _call(run_env, "POST", cycle, "approve", key="supervisor")
    assert refused.status_code == 409, refused.text
    assert refused.json()["title"] == "Cycle changed since preparation"
    assert _statuses(pg, cycle) == {"issued": 11}
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_chunks") == 0
    assert [(e["action"], e["principal"]) for e in _events(pg, first["run_id"])] == [
        ("prepared", "operator"), ("approval_refused", "supervisor")]

    started = _start(run_env, cycle, key="changed-2")
    assert started["voucher_count"] == 11 and started["run_id"] != first["run_id"]
    done = _wait(run_env, cycle)
    assert done["status"] == "completed", done
    assert _statuses(pg, cycle) == {"active": 11}
    assert run_env.buffr.stats()["credits"] == 11


# --- a whole cycle --------------------------------------------------------------------------------

def test_a_cycle_started_twice_with_one_key_is_one_run_sending_each_voucher_once(
        run_env: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-04"
    _seed(pg, 5000, cycle)
    first = _start(run_env, cycle, key="cycle-2026-04")
    second = _start(run_env, cycle, key="cycle-2026-04")  # the operator's retry: same key, same run
    assert second["run_id"] == first["run_id"]
    assert first["checker"] == {"principal": "supervisor", "key_id": "supervisor-local"}
    assert first["maker"] == {"principal": "operator", "key_id": "operator-local"}

    run = _wait(run_env, cycle, timeout=120)
    assert run["status"] == "completed", run
    stats = run_env.buffr.stats()
    progress = run["progress"]
    # No faults injected: Buffr saw each voucher once, plus only re-sends that client timeouts on
    # this (shared, loaded) machine forced — each counted by the run as a retry or a re-send (an
    # attempt the client gave up on may never reach Buffr, hence at most).
    assert stats["errors_injected"] == {}
    resent = progress["buffr_calls"] - progress["retries"] - 5000
    assert 5000 <= stats["calls"]["disburse"] <= 5000 + progress["retries"] + resent
    assert stats["credits"] == 5000 and stats["double_credited"] == {}
    assert _statuses(pg, cycle) == {"active": 5000}
    assert progress["total"] == progress["active"] == progress["sent"] == 5000
    assert progress["queued"] == progress["pending"] == progress["failed"] == 0
    assert progress["chunks"] == {"done": 50}
    assert factories.count(pg, "SELECT count(*) FROM cycle_runs WHERE cycle = %s", cycle) == 1
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_chunks WHERE sends <> 1") == 0
    assert [(e["action"], e["principal"]) for e in _events(pg, first["run_id"])] == [
        ("prepared", "operator"), ("approved", "supervisor"), ("enqueuing", "supervisor"), ("enqueued", "supervisor"),
        ("completed", "system")]
    approved = _events(pg, first["run_id"])[1]["detail"]
    assert approved["maker_principal"] == "operator" and approved["checker_principal"] == "supervisor"
    # every voucher's audit row names the run that sent it
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE reference = %s AND to_status = 'pending'",
                           f"cycle-run:{first['run_id']}") == 5000


def test_buffr_faults_end_with_every_voucher_active_once_and_retries_visible(run_env: Any,
                                                                            pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-05"
    _seed(pg, 600, cycle)
    run_env.buffr.configure(error_rate=0.3, timeout_rate=0.1, hang_ms=1700, timeout_after_credit=True)
    run_id = _start(run_env, cycle)["run_id"]
    run = _wait(run_env, cycle, timeout=120)
    assert run["status"] == "completed", run
    stats = run_env.buffr.stats()
    assert _statuses(pg, cycle) == {"active": 600}
    assert stats["credits"] == 600 and stats["double_credited"] == {}
    progress = run["progress"]
    assert progress["retries"] > 0 and progress["errors"] is not None
    # every request Buffr saw is a first attempt or a retry the run counted: nothing unexplained
    assert 600 < stats["calls"]["disburse"] <= progress["buffr_calls"]
    assert progress["buffr_calls"] - progress["retries"] >= 600
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_chunks WHERE run_id = %s AND state = 'done'",
                           run_id) == 6


def test_a_poller_killed_mid_cycle_and_restarted_loses_and_doubles_nothing(run_env: Any,
                                                                          pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-06"
    _seed(pg, 1500, cycle)
    _set_rate(run_env, 400)
    _start(run_env, cycle)
    _wait_for_sends(run_env, 400)
    for poller in run_env.pollers:
        poller.kill()  # as a crash: batches in flight are never deleted
    sent_at_kill = run_env.buffr.stats()["calls"]["disburse"]
    assert 0 < sent_at_kill < 1500
    run_env.start_event_sources()
    run = _wait(run_env, cycle, timeout=120)
    assert run["status"] == "completed", run
    stats = run_env.buffr.stats()
    assert _statuses(pg, cycle) == {"active": 1500}
    assert stats["credits"] == 1500 and stats["double_credited"] == {}
    assert 1500 <= stats["calls"]["disburse"] <= run["progress"]["buffr_calls"]


def test_pause_stops_new_sends_within_one_batch_and_resume_finishes(run_env: Any,
                                                                  pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-07"
    _seed(pg, 800, cycle)
    _set_rate(run_env, 200)
    _start(run_env, cycle)
    _wait_for_sends(run_env, 250)  # mid-chunk: the two consumers share the rate, so 200 ends both chunks
    paused = _call(run_env, "POST", cycle, "pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    at_pause = run_env.buffr.stats()["calls"]["disburse"]
    time.sleep(1.5)
    settled = run_env.buffr.stats()["calls"]["disburse"]
    # Within one batch: each of the two consumers finishes at most the batch it holds (batch size 1,
    # a 100-voucher chunk; what it already claimed is sent, nothing new is claimed), then nothing.
    assert 0 < settled - at_pause <= 2 * 1 * 100
    time.sleep(1.5)
    assert run_env.buffr.stats()["calls"]["disburse"] == settled
    assert _statuses(pg, cycle).get("pending", 0) == 0  # nothing claimed and left unsent
    run = _call(run_env, "GET", cycle).json()
    assert run["status"] == "paused" and run["progress"]["queued"] > 0

    resumed = _call(run_env, "POST", cycle, "resume")
    assert resumed.status_code == 200, resumed.text
    run = _wait(run_env, cycle, timeout=120)
    assert run["status"] == "completed", run
    stats = run_env.buffr.stats()
    assert _statuses(pg, cycle) == {"active": 800}
    assert stats["credits"] == 800 and stats["double_credited"] == {}
    actions = [(e["action"], e["principal"]) for e in _events(pg, run["run_id"])]
    assert ("paused", "operator") in actions and ("resumed", "operator") in actions


def test_the_fleet_send_rate_stays_under_buffrs_agreed_rate(run_env: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-08"
    rate = 300
    _seed(pg, 1200, cycle)
    _set_rate(run_env, rate)
    _start(run_env, cycle)
    run = _wait(run_env, cycle, timeout=120)
    assert run["status"] == "completed", run
    times = sorted(run_env.buffr.stats(detail=True)["disburse_times"])
    assert len(times) == 1200
    busiest, start = 0, 0
    for end, t in enumerate(times):  # the most calls inside any one-second window
        while t - times[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    assert busiest <= rate * 1.05, busiest


def test_a_poison_message_ends_in_the_dead_letter_queue_and_raises_the_alarm(run_env: Any) -> None:
    sqs = run_env.sqs()
    assert run_env.alarm_states()[ALARM] == "OK"
    sqs.send_message(QueueUrl=run_env.queue_urls["smartpay-cycle-local"], MessageBody=json.dumps({"not": "a chunk"}))
    deadline = time.monotonic() + 60
    while _messages(run_env, "smartpay-cycle-dlq-local") == 0 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _messages(run_env, "smartpay-cycle-dlq-local") == 1
    assert _messages(run_env, "smartpay-cycle-local") == 0
    assert run_env.alarm_states()[ALARM] == "ALARM"
    for message in sqs.receive_message(QueueUrl=run_env.queue_urls["smartpay-cycle-dlq-local"],
                                       MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message(QueueUrl=run_env.queue_urls["smartpay-cycle-dlq-local"],
                           ReceiptHandle=message["ReceiptHandle"])


def test_reconciliation_and_the_cycle_report_know_the_run_sent_vs_confirmed(run_env: Any,
                                                                            pg: psycopg.Connection[Any]) -> None:
    from reconcile import report as recon_report

    cycle = "2026-09"
    _seed(pg, 30, cycle)
    run_id = _start(run_env, cycle)["run_id"]
    assert _wait(run_env, cycle)["status"] == "completed"
    run_env.buffr.forget(pg.execute("SELECT id::text FROM vouchers WHERE cycle = %s ORDER BY id LIMIT 1",
                                    (cycle,)).fetchone()["id"])  # one credit Buffr no longer knows
    result = run_env.invoke("ReconcileFunction", {"mode": "full"})
    assert result["status"] == "completed", result
    report = recon_report.cycle_report(pg, PROGRAMME, cycle)
    [run] = report["cycle_runs"]
    assert (run["run_id"], run["status"], run["maker"], run["checker"]) == (run_id, "completed", "operator",
                                                                            "supervisor")
    assert (run["planned"], run["sent"], run["accepted"], run["confirmed"], run["discrepancies"]) == (
        30, 30, 30, 29, 1)
    text = recon_report.to_text(report)
    assert "Cycle runs" in text and run_id[:8] in text
    assert {r["key"] for r in recon_report.csv_rows(report) if r["section"] == "cycle_run"} >= {
        f"{run_id}:sent", f"{run_id}:confirmed"}


def test_an_enqueue_interrupted_between_send_and_bookkeeping_sends_each_voucher_once(
        run_env: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-10"
    _seed(pg, 300, cycle)
    run_env.stop_event_sources()  # messages wait on the queue while the crash is staged
    try:
        run_id = _start(run_env, cycle)["run_id"]
        assert _messages(run_env, "smartpay-cycle-local") == 3
        assert _call(run_env, "POST", cycle, "pause").status_code == 200
        # the crash: chunk 0's message went out, but its bookkeeping never happened
        pg.execute("UPDATE cycle_run_chunks SET state = 'sending' WHERE run_id = %s AND chunk_no = 0", (run_id,))
        resumed = _call(run_env, "POST", cycle, "resume")  # the restart re-sends chunk 0 under a new token
        assert resumed.status_code == 200, resumed.text
        assert _messages(run_env, "smartpay-cycle-local") == 4
    finally:
        run_env.start_event_sources()
    run = _wait(run_env, cycle)
    assert run["status"] == "completed", run
    stats = run_env.buffr.stats()
    assert _statuses(pg, cycle) == {"active": 300}
    assert stats["credits"] == 300 and stats["double_credited"] == {}
    assert 300 <= stats["calls"]["disburse"] <= run["progress"]["buffr_calls"]
    chunk = pg.execute("SELECT sends, receives FROM cycle_run_chunks WHERE run_id = %s AND chunk_no = 0",
                       (run_id,)).fetchone()
    assert (chunk["sends"], chunk["receives"]) == (2, 1)  # two messages, one processed: the stale one dropped
    # every message deleted once its invocation ends (the completing one anchors the audit heads first)
    for _ in range(100):
        if _messages(run_env, "smartpay-cycle-local") == 0:
            break
        time.sleep(0.1)
    assert _messages(run_env, "smartpay-cycle-local") == 0


def test_a_run_never_sends_a_voucher_whose_beneficiary_became_ineligible(run_env: Any,
                                                                         pg: psycopg.Connection[Any]) -> None:
    cycle = "2026-11"
    _seed(pg, 40, cycle)
    suspended_before = pg.execute("SELECT beneficiary_id FROM vouchers WHERE cycle = %s ORDER BY id LIMIT 1",
                                  (cycle,)).fetchone()["beneficiary_id"]
    pg.execute("UPDATE beneficiaries SET status = 'suspended' WHERE id = %s", (suspended_before,))
    run_env.stop_event_sources()
    try:
        run = _start(run_env, cycle)
        # after approval, before anything is sent: three more are suspended
        later = [r["beneficiary_id"] for r in pg.execute(
            "SELECT beneficiary_id FROM vouchers WHERE cycle = %s AND status = 'issued' ORDER BY id DESC LIMIT 3",
            (cycle,)).fetchall()]
        pg.execute("UPDATE beneficiaries SET status = 'suspended' WHERE id = ANY(%s)", (later,))
    finally:
        run_env.start_event_sources()
    assert run["voucher_count"] == 39  # the one suspended before is held already: not in the run
    done = _wait(run_env, cycle)
    assert done["status"] == "completed", done
    ineligible = {str(b) for b in [suspended_before, *later]}
    paid = pg.execute("SELECT v.id::text, v.beneficiary_id::text FROM vouchers v WHERE cycle = %s AND status = 'active'",
                      (cycle,)).fetchall()
    credited = set(run_env.buffr.stats(detail=True)["credits_per_voucher"])
    assert len(paid) == 36 and not {p["beneficiary_id"] for p in paid} & ineligible
    assert credited == {p["id"] for p in paid}  # nothing of the four reached Buffr
    assert done["progress"]["held"] == 3 and done["progress"]["active"] == 36
