"""Fault tests: concurrency storms, Buffr faults and deadlines; exact final state every time.

The send pipeline (``disburse.logic.batch``) is driven directly on vouchers of a run under way
(``factories.in_run``): the only vouchers the claim sends."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from disburse.logic import batch
from disburse.models import BatchRequest
from tests import factories
from tests.fixtures_disburse import lambda_context

pytestmark = pytest.mark.integration


def _cycle_vouchers(pg, n: int, cycle: str = "2026-08") -> list[str]:
    """n issued vouchers of a run under way, in id order (direct SQL, like the factories)."""
    ids = []
    for _ in range(n):
        b = factories.beneficiary(pg)
        ids.append(factories.voucher(pg, b["id"], cycle=cycle)["id"])
    factories.in_run(pg, ids, cycle=cycle)
    return sorted(ids)


def _send(ids: list[str], reference: str, seconds: float = 60) -> batch.BatchReply:
    return batch.disburse_batch(BatchRequest(voucher_ids=ids), reference=reference, context=lambda_context(seconds))


def _events(pg, voucher_id: str) -> list[tuple]:
    rows = pg.execute("SELECT from_status, to_status FROM voucher_events WHERE voucher_id = %s ORDER BY id",
                      (voucher_id,)).fetchall()
    return [(r["from_status"], r["to_status"]) for r in rows]


def test_concurrent_sends_of_one_voucher_credit_it_once(disburse_env, pg, sim) -> None:
    """Twenty batches race to send one voucher: one claim (issued → pending), Buffr's key does the rest."""
    disburse_env["reconfigure"](DB_POOL_SIZE="40")  # one container's pool shared by twenty batches
    sim.configure(latency_ms=200)
    v = _cycle_vouchers(pg, 1)[0]

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda n: _send([v], f"race-{n}"), range(20)))
    assert all(r.results[0].outcome in ("active", "pending", "skipped") for r in replies)
    stats = sim.stats(detail=True)
    assert stats["credits_per_voucher"] == {v: 1} and stats["double_credited"] == {}
    assert _events(pg, v) == [(None, "issued"), ("issued", "pending"), ("pending", "active")]


def test_faulty_buffr_never_double_credits_and_loses_nothing(disburse_env, pg, sim) -> None:
    disburse_env["reconfigure"](BUFFR_READ_TIMEOUT_S="0.3", BUFFR_MAX_ATTEMPTS="3")
    ids = _cycle_vouchers(pg, 1000, cycle="2026-07")
    sim.configure(error_rate=0.30, timeout_rate=0.10, hang_ms=800, seed=11)
    first = _send(ids, "pass-1", 120)
    assert first.attempted == 1000 and first.not_attempted == [] and first.failed == 0
    statuses = {r["id"]: r["status"] for r in pg.execute(
        "SELECT id::text AS id, status FROM vouchers WHERE cycle = '2026-07'").fetchall()}
    assert set(statuses) == set(ids) and set(statuses.values()) <= {"active", "pending"}
    assert first.succeeded == list(statuses.values()).count("active")
    assert first.pending == list(statuses.values()).count("pending") > 0  # P(none pending) ≈ e^-64
    stats = sim.stats(detail=True)
    assert stats["double_credited"] == {}
    assert stats["errors_injected"]["5xx"] > 0 and stats["errors_injected"]["timeout"] > 0
    # Some pending vouchers were credited before their reply was lost (timeout after credit).
    assert all(stats["credits_per_voucher"].get(v) == 1 for v, s in statuses.items() if s == "active")

    # The pending ones whose credit happened at Buffr (its reply was lost): re-sent, they must be
    # refused as duplicates; the others are credited by the re-send.
    lost_replies = [v for v, s in statuses.items() if s == "pending" and v in stats["credits_per_voucher"]]
    assert lost_replies, "no reply was lost after a credit: the duplicate path was not exercised"
    sim.configure(error_rate=0.0, timeout_rate=0.0)
    second = _send(ids, "pass-2", 120)
    after = sim.stats(detail=True)
    assert after["calls"]["disburse"] - stats["calls"]["disburse"] == first.pending  # each once, nothing else
    assert after["duplicates_refused"] - stats["duplicates_refused"] == len(lost_replies)
    assert second.succeeded == first.pending and second.skipped == 1000 - first.pending  # active: not sent again
    stats = sim.stats(detail=True)
    assert stats["credits_per_voucher"] == {v: 1 for v in ids}
    rows = pg.execute("SELECT id::text AS id, status, buffr_delivery_id FROM vouchers WHERE cycle = '2026-07'").fetchall()
    assert {r["status"] for r in rows} == {"active"}
    for row in rows[:50]:
        assert sim.voucher(row["id"])["deliveryId"] == row["buffr_delivery_id"]
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE to_status = 'pending'") == 1000
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE to_status = 'active'") == 1000


def test_batch_cut_by_the_deadline_reports_exactly_what_it_did_not_attempt(disburse_env, pg, sim) -> None:
    disburse_env["reconfigure"](BUFFR_CONCURRENCY="20", BUFFR_CONNECT_TIMEOUT_S="0.5",
                                BUFFR_READ_TIMEOUT_S="0.5")
    ids = _cycle_vouchers(pg, 300, cycle="2026-06")
    sim.configure(latency_ms=150)
    context = lambda_context(3.0)
    reply = batch.disburse_batch(BatchRequest(voucher_ids=ids), reference="cut", context=context)
    assert context.get_remaining_time_in_millis() > 0
    attempted = [r.voucher_id for r in reply.results]
    assert reply.stopped_early and 0 < len(attempted) < 300 and reply.not_attempted
    assert sorted(attempted + reply.not_attempted) == sorted(ids)
    assert set(attempted) == set(ids[:len(attempted)]) and reply.not_attempted == ids[len(attempted):]
    assert {r.outcome for r in reply.results} == {"active"}
    stats = sim.stats(detail=True)
    assert stats["credits_per_voucher"] == {v: 1 for v in attempted}
    assert (stats["calls"], stats["duplicates_refused"]) == ({"disburse": len(attempted)}, 0)
    for v in reply.not_attempted:
        assert _events(pg, v) == [(None, "issued")]
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE status = 'issued' AND cycle = '2026-06'") == len(
        reply.not_attempted)
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE status = 'pending'") == 0


def test_buffr_rejection_fails_the_voucher_with_the_reason(disburse_env, pg, sim) -> None:
    v = _cycle_vouchers(pg, 1)[0]
    sim.set_voucher(v, reject="wallet closed")
    item = _send([v], "r").results[0]
    assert (item.outcome, item.status, item.reason) == ("failed", "failed", "wallet closed")
    row = pg.execute("SELECT status, failure_reason FROM vouchers WHERE id = %s", (v,)).fetchone()
    assert row == {"status": "failed", "failure_reason": "wallet closed"}
    assert (sim.stats()["calls"], sim.stats()["duplicates_refused"]) == ({"disburse": 1}, 0)
    again = _send([v], "r2").results[0]
    assert (again.outcome, again.status) == ("skipped", "failed")
    assert sim.stats()["calls"] == {"disburse": 1}  # a failed voucher is never sent again


@pytest.mark.parametrize("faults", [{"error_rate": 1.0}, {"rate_429": 1.0},
                                    {"timeout_rate": 1.0, "timeout_after_credit": False}])
def test_buffr_down_leaves_the_voucher_pending_and_a_retry_finishes_it(disburse_env, pg, sim, faults) -> None:
    disburse_env["reconfigure"](BUFFR_READ_TIMEOUT_S="0.2", BUFFR_MAX_ATTEMPTS="3")
    v = _cycle_vouchers(pg, 1)[0]
    sim.configure(hang_ms=500, retry_after_s=0, **faults)
    item = _send([v], "r1").results[0]
    assert (item.outcome, item.status, item.attempts) == ("pending", "pending", 3)
    assert _events(pg, v) == [(None, "issued"), ("issued", "pending")]
    # Bounded: exactly BUFFR_MAX_ATTEMPTS calls, each refused before any credit.
    stats = sim.stats()
    kind = "5xx" if "error_rate" in faults else "429" if "rate_429" in faults else "timeout"
    assert (stats["calls"], stats["errors_injected"], stats["credits"], stats["duplicates_refused"]) == (
        {"disburse": 3}, {kind: 3}, 0, 0)
    sim.reset()
    assert _send([v], "r2").results[0].outcome == "active"
    assert _events(pg, v) == [(None, "issued"), ("issued", "pending"), ("pending", "active")]
    stats = sim.stats(detail=True)
    assert stats["credits_per_voucher"] == {v: 1}
    assert (stats["calls"], stats["duplicates_refused"]) == ({"disburse": 1}, 0)


def test_a_batch_logs_every_voucher_id_in_a_few_lines(disburse_env, pg, sim) -> None:
    """Accepted vouchers are logged a turn at a time (every id findable); each one that did not go
    through gets its own warning with why. Not one line per success: at INFO that cost more CPU
    than the Buffr calls themselves (benchmarks/disburse_batch.py)."""
    import io
    import json
    import logging

    from smartpay.observability import logger

    ids = _cycle_vouchers(pg, 120, cycle="2026-05")
    sim.set_voucher(ids[7], reject="wallet closed")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        reply = _send(ids, "logged")
    finally:
        logger.removeHandler(handler)
    assert (reply.succeeded, reply.failed) == (119, 1)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    accepted = [line for line in lines if line["message"] == "disbursements accepted by Buffr"]
    logged_ids = [v for line in accepted for v in line["voucher_ids"]]
    assert sorted(logged_ids) == sorted(set(ids) - {ids[7]})
    assert all(line["count"] == len(line["voucher_ids"]) for line in accepted)
    assert len(accepted) < 120 / 4
    warnings = [line for line in lines if line["message"] == "disbursement not completed"]
    assert [(w["level"], w["voucher_id"], w["outcome"], w["reason"]) for w in warnings] == [
        ("WARNING", ids[7], "failed", "wallet closed")]
    assert [line["requested"] for line in lines if line["message"] == "batch finished"] == [120]


def test_a_batch_turn_that_loses_a_deadlock_is_run_again_and_nothing_doubles(pg, db_env, monkeypatch) -> None:
    """The turn's statement is atomic on its own (autocommit), so a deadlock victim or a lock
    timeout is retried once instead of losing the answers in it; inside a transaction it is not."""
    import psycopg

    from disburse import repository
    from smartpay import db
    from smartpay.errors import DatabaseUnavailable
    from smartpay.transitions import Change

    settled_id, *claim_ids = _cycle_vouchers(pg, 3, cycle="2026-04")
    pg.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (settled_id,))
    real = repository.transition_many
    calls = []

    def loses_once(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return real(*args, **kwargs)

    monkeypatch.setattr(repository, "transition_many", loses_once)
    with db.autocommit() as conn:
        settled, claimed, refused = repository.settle_and_claim(
            conn, [Change(settled_id, "active", delivery_id="d-1")], claim_ids, "retried")
    assert calls == [3, 3]
    assert [s.outcome for s in settled] == ["applied"] and claimed == claim_ids and refused == []
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE reference = 'retried'") == 3
    assert {r["status"] for r in pg.execute("SELECT status FROM vouchers WHERE cycle = '2026-04'")} == {
        "active", "pending"}

    calls.clear()
    with pytest.raises(DatabaseUnavailable) as raised, db.transaction() as conn:  # 503, never a 500
        repository.settle_and_claim(conn, [], [settled_id], "in-a-transaction")
    assert calls == [1] and isinstance(raised.value.__cause__, psycopg.errors.DeadlockDetected)


def _recording_turns(monkeypatch) -> list[tuple[int, int, int]]:
    """Every batch statement as (backend pid, answers recorded, vouchers claimed)."""
    from disburse import repository

    real, turns = repository.settle_and_claim, []

    def recorded(conn, settle, voucher_ids, reference):
        turns.append((conn.info.backend_pid, len(settle), len(voucher_ids)))
        return real(conn, settle, voucher_ids, reference)

    monkeypatch.setattr(repository, "settle_and_claim", recorded)
    return turns


def _all_active_once(pg, sim, ids: list[str], cycle: str) -> None:
    assert sim.stats(detail=True)["credits_per_voucher"] == {v: 1 for v in ids}
    assert {r["status"] for r in pg.execute("SELECT status FROM vouchers WHERE cycle = %s", (cycle,))} == {"active"}
    assert factories.count(pg, "SELECT count(*) FROM voucher_events e JOIN vouchers v ON v.id = e.voucher_id "
                               f"WHERE v.cycle = '{cycle}'") == 3 * len(ids)


def test_a_batch_records_answers_on_a_spare_connection_while_it_claims(disburse_env, pg, sim, monkeypatch) -> None:
    """With a second pooled connection (DB_POOL_SIZE 2, as deployed) the answers of a turn are
    recorded on it while the batch's own connection claims the next vouchers: each voucher still
    moves issued → pending → active once, with one audit row per move."""
    ids = _cycle_vouchers(pg, 400, cycle="2026-03")
    sim.configure(latency_ms=20)
    turns = _recording_turns(monkeypatch)
    reply = _send(ids, "spare")
    assert (reply.succeeded, reply.pending, reply.failed) == (400, 0, 0)
    claims = {pid for pid, _, claimed in turns if claimed}
    recorded_beside_a_claim = {pid for pid, settled, claimed in turns if settled and not claimed} - claims
    assert len(claims) == 1 and recorded_beside_a_claim, turns
    assert sum(settled for _, settled, _ in turns) == sum(claimed for _, _, claimed in turns) == 400
    _all_active_once(pg, sim, ids, "2026-03")


def test_a_batch_with_no_spare_connection_runs_on_its_own(disburse_env, pg, sim, monkeypatch) -> None:
    """The pool's other connection busy elsewhere: the batch does every turn on its one connection
    (a spare speeds it up; its absence never fails it)."""
    from smartpay import db

    ids = _cycle_vouchers(pg, 150, cycle="2026-02")
    turns = _recording_turns(monkeypatch)
    with db.connection() as held:  # the pool's second connection, taken for the whole batch
        held.execute("SELECT 1")
        reply = _send(ids, "no-spare")
    assert (reply.succeeded, reply.pending, reply.failed) == (150, 0, 0)
    assert len({pid for pid, _, _ in turns}) == 1
    _all_active_once(pg, sim, ids, "2026-02")


def test_a_spare_connection_killed_mid_batch_is_503_and_the_next_batch_sends_nothing_twice(
        disburse_env, pg, sim, monkeypatch) -> None:
    """The spare's server gone while it records answers: the batch ends 503 (DatabaseUnavailable);
    vouchers whose answers were lost stay pending, the next batch re-sends them under the same
    idempotency key (Buffr refuses each as a duplicate) and every voucher ends active, credited once."""
    import psycopg

    from disburse import repository
    from smartpay.errors import DatabaseUnavailable

    disburse_env["reconfigure"](BUFFR_CONCURRENCY="20")  # many turns, each claiming ≤ 40
    ids = _cycle_vouchers(pg, 400, cycle="2026-01")
    sim.configure(latency_ms=20)
    real, killed, claimers = repository.settle_and_claim, [], set()

    def kills_the_spare(conn, settle, voucher_ids, reference):
        if voucher_ids:  # the batch's own connection (its first statement is a claim)
            claimers.add(conn.info.backend_pid)
        elif settle and claimers and conn.info.backend_pid not in claimers and not killed:  # answers, on the spare
            pg.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
            killed.append(conn.info.backend_pid)
        return real(conn, settle, voucher_ids, reference)

    monkeypatch.setattr(repository, "settle_and_claim", kills_the_spare)
    with pytest.raises(DatabaseUnavailable) as raised:
        _send(ids, "cut-spare")
    assert killed and isinstance(raised.value.__cause__, psycopg.OperationalError)  # the killed spare, as a 503
    before = _settled_calls(sim)  # the calls already submitted finish on the client's loop
    status = {r["id"]: r["status"] for r in pg.execute(
        "SELECT id::text AS id, status FROM vouchers WHERE cycle = '2026-01'")}
    pending = {v for v, s in status.items() if s == "pending"}
    assert pending and set(status.values()) <= {"issued", "pending", "active"}
    assert before["double_credited"] == {}
    assert all(v in before["credits_per_voucher"] for v, s in status.items() if s == "active")

    monkeypatch.setattr(repository, "settle_and_claim", real)
    second = _send(ids, "after-cut")
    after = sim.stats(detail=True)
    assert second.succeeded == 400 - list(status.values()).count("active")
    assert after["calls"]["disburse"] - before["calls"]["disburse"] == second.succeeded
    # each pending voucher Buffr had credited (its answer lost with the spare) is refused as a duplicate
    assert after["duplicates_refused"] - before["duplicates_refused"] == len(pending & set(before["credits_per_voucher"]))
    _all_active_once(pg, sim, ids, "2026-01")


def _settled_calls(sim, quiet_s: float = 0.3, limit_s: float = 10.0) -> dict:
    """The simulator's stats once no call has arrived for ``quiet_s`` (at most ``limit_s``)."""
    import time

    stats, stop = sim.stats(detail=True), time.monotonic() + limit_s
    while time.monotonic() < stop:
        time.sleep(quiet_s)
        now = sim.stats(detail=True)
        if now["calls"] == stats["calls"]:
            return now
        stats = now
    raise AssertionError("calls to the simulator did not stop")


def test_a_turn_whose_two_halves_both_fail_logs_the_lost_answers_and_is_503(disburse_env, pg, sim,
                                                                             monkeypatch) -> None:
    """Claim and recording fail in the same turn: the claim's error is the 503, and the recording's is
    logged (not dropped with the helper thread)."""
    import io
    import json
    import logging
    import threading

    import psycopg

    from disburse import repository
    from smartpay.errors import DatabaseUnavailable
    from smartpay.observability import logger

    disburse_env["reconfigure"](BUFFR_CONCURRENCY="20")
    ids = _cycle_vouchers(pg, 200, cycle="2025-12")
    real, claimed_on, recording_failed = repository.settle_and_claim, set(), threading.Event()

    def both_fail(conn, settle, voucher_ids, reference):
        pid = conn.info.backend_pid
        if settle and not voucher_ids and claimed_on and pid not in claimed_on:  # answers, on the spare
            recording_failed.set()
            raise psycopg.OperationalError("server closed the connection (recording)")
        if voucher_ids and not settle and claimed_on:  # a later claim: it runs beside a recording
            assert recording_failed.wait(5)
            raise psycopg.OperationalError("server closed the connection (claim)")
        if voucher_ids:
            claimed_on.add(pid)
        return real(conn, settle, voucher_ids, reference)

    monkeypatch.setattr(repository, "settle_and_claim", both_fail)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            _send(ids, "both")
    finally:
        logger.removeHandler(handler)
    assert "(claim)" in str(raised.value.__cause__)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(x["level"], x["error"]) for x in lines if x["message"] == "recording Buffr's answers failed as well"] == [
        ("ERROR", "OperationalError")]
