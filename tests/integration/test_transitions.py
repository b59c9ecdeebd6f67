"""Every status change goes through one writer: row lock, lifecycle decision, audit row, one transaction."""

import contextlib
import itertools
import threading
import time
import uuid

import psycopg
import pytest

from smartpay import db
from smartpay.lifecycle import VoucherStatus, decide
from smartpay.transitions import Change, TransitionResult, transition, transition_many
from tests import factories

pytestmark = pytest.mark.integration


def test_applied_transition_writes_one_audit_row(pg, db_env) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], claimable=True)
    with db.transaction() as conn:
        result = transition(conn, v["id"], "pending", source="disburse", reference="req-1")
    assert result.applied and (result.from_status, result.to_status) == ("issued", "pending")
    row = pg.execute("SELECT status, version FROM vouchers WHERE id = %s", (v["id"],)).fetchone()
    assert row == {"status": "pending", "version": 2}
    events = pg.execute("SELECT from_status, to_status, source, reference FROM voucher_events "
                        "WHERE voucher_id = %s ORDER BY id", (v["id"],)).fetchall()
    assert events[-1] == {"from_status": "issued", "to_status": "pending", "source": "disburse",
                          "reference": "req-1"}


def test_stale_and_duplicate_change_nothing(pg, db_env) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="active", claimable=True)
    with db.transaction() as conn:
        assert transition(conn, v["id"], "pending", source="webhook", reference="w1").outcome == "stale"
        assert transition(conn, v["id"], "active", source="webhook", reference="w2").outcome == "duplicate"
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s AND source = 'webhook'",
                           v["id"]) == 0
    assert pg.execute("SELECT version FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["version"] == 1


def test_failure_rolls_back_status_and_audit_together(pg, db_env) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], claimable=True)
    with pytest.raises(RuntimeError), db.transaction() as conn:
        transition(conn, v["id"], "pending", source="disburse", reference="r")
        raise RuntimeError("crash after the update")
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["status"] == "issued"
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"]) == 1


@pytest.mark.parametrize("fail", [False, True])
def test_pipelined_transaction_commits_or_rolls_back_as_one(pg, db_env, fail: bool) -> None:
    """``db.transaction(pipelined=True)``: the queued UPDATE + audit INSERT commit, or vanish, together."""
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], claimable=True)
    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext(), \
            db.transaction(pipelined=True) as conn:
        result = transition(conn, v["id"], "pending", source="disburse", reference="p")
        assert conn.execute("SELECT status FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["status"] == "pending"
        if fail:
            raise RuntimeError("crash after the queued writes")
    assert result.applied
    status = pg.execute("SELECT status FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["status"]
    audit = factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"])
    assert (status, audit) == (("issued", 1) if fail else ("pending", 2))


def test_concurrent_writers_cannot_both_win(pg, clean_db) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="active", claimable=True)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def writer(target: str) -> None:
        with psycopg.connect(clean_db) as conn:
            barrier.wait()
            with conn.transaction():
                outcomes.append(transition(conn, v["id"], target, source="webhook", reference=target).outcome)

    threads = [threading.Thread(target=writer, args=(t,)) for t in ["redeemed"] * 4 + ["cancelled"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("applied") == 1
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s AND source = 'webhook'",
                           v["id"]) == 1


def test_redeemed_after_expired_is_applied_and_flagged(pg, db_env) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="expired", claimable=True)
    with db.transaction() as conn:
        result = transition(conn, v["id"], "redeemed", source="webhook", reference="w")
    assert result.applied and result.review_reason
    row = pg.execute("SELECT status, review_reason FROM vouchers WHERE id = %s", (v["id"],)).fetchone()
    assert row["status"] == "redeemed" and "expired" in row["review_reason"]


def test_unknown_voucher(pg, db_env) -> None:
    with db.transaction() as conn:
        result = transition(conn, "3fa85f64-5717-4562-b3fc-2c963f66afa6", "active", source="webhook",
                            reference="w")
    assert result.outcome == "not_found"


def test_a_batch_decides_every_pair_exactly_as_the_lifecycle_table(pg, db_env) -> None:
    """transition_many decides in SQL from ``lifecycle.decision_table()``: same outcomes as ``decide``."""
    pairs = [(c, t) for c in VoucherStatus for t in VoucherStatus]
    vouchers = [factories.voucher(pg, factories.beneficiary(pg)["id"], status=c.value, claimable=True)["id"] for c, _ in pairs]
    unknown = str(uuid.uuid4())
    changes = [Change(v, t, delivery_id=f"d-{i}", detail={"n": i}) for i, (v, (_, t)) in
               enumerate(zip(vouchers, pairs, strict=True))]
    with db.transaction() as conn:
        results = transition_many(conn, [*changes[:20], Change(unknown, "active"), *changes[20:]],
                                  source="reconcile", reference="run-1")
    assert results[20] == TransitionResult("not_found", unknown, None, "active")
    del results[20]
    for i, ((current, target), v, result) in enumerate(zip(pairs, vouchers, results, strict=True)):
        decision = decide(current, target)
        assert result == TransitionResult(decision.outcome, v, current.value, target.value,
                                          decision.review_reason), (current, target)
        row = pg.execute("SELECT status, version, buffr_delivery_id, review_reason FROM vouchers WHERE id = %s",
                         (v,)).fetchone()
        events = pg.execute("SELECT from_status, to_status, source, reference, detail FROM voucher_events "
                            "WHERE voucher_id = %s AND source = 'reconcile'", (v,)).fetchall()
        if decision.applies:
            assert row == {"status": target.value, "version": 2, "buffr_delivery_id": f"d-{i}",
                           "review_reason": decision.review_reason}
            detail = {"n": i, **({"review_reason": decision.review_reason} if decision.review_reason else {})}
            assert events == [{"from_status": current.value, "to_status": target.value, "source": "reconcile",
                               "reference": "run-1", "detail": detail}]
        else:
            assert row == {"status": current.value, "version": 1, "buffr_delivery_id": None, "review_reason": None}
            assert events == []
    applied = sum(decide(c, t).applies for c, t in pairs)
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'reconcile'") == applied


def test_a_change_without_detail_audits_a_null_detail(pg, db_env) -> None:
    v = factories.voucher(pg, factories.beneficiary(pg)["id"], claimable=True)["id"]
    with db.transaction() as conn:
        transition_many(conn, [Change(v, "pending")], source="disburse", reference="r")
    assert pg.execute("SELECT detail FROM voucher_events WHERE voucher_id = %s AND to_status = 'pending'",
                      (v,)).fetchone() == {"detail": None}


def test_overlapping_batches_in_opposite_orders_neither_deadlock_nor_both_win(pg, clean_db) -> None:
    """Rows are locked in id order whatever the input order, so two batches cannot deadlock."""
    vouchers = [factories.voucher(pg, factories.beneficiary(pg)["id"], claimable=True)["id"] for _ in range(300)]
    barrier = threading.Barrier(4)
    results: dict[str, list[TransitionResult]] = {}
    errors: list[BaseException] = []

    def batch(name: str, ids: list[str], target: str) -> None:
        try:
            with psycopg.connect(clean_db) as conn:
                barrier.wait()
                with conn.transaction():
                    results[name] = transition_many(conn, [Change(v, target) for v in ids], source="disburse",
                                                    reference=name)
        except BaseException as exc:  # a deadlock would surface here
            errors.append(exc)

    runs = [("a", vouchers, "pending"), ("b", vouchers[::-1], "cancelled"),
            ("c", vouchers[150:] + vouchers[:150], "pending"), ("d", vouchers[::2] + vouchers[1::2], "expired")]
    threads = [threading.Thread(target=batch, args=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == ["a", "b", "c", "d"]
    for v in vouchers:  # whichever batch locked it first found it issued, and every target is reachable
        outcomes = [r.outcome for name in results for r in results[name] if r.voucher_id == v]
        assert outcomes.count("applied") >= 1
    final = {r["id"]: r["status"] for r in pg.execute("SELECT id::text AS id, status FROM vouchers")}
    changes = factories.count(pg, "SELECT count(*) FROM voucher_events WHERE from_status IS NOT NULL")
    applied = sum(r.applied for name in results for r in results[name])
    assert changes == applied
    # Every voucher's audit trail replays to its final status along the lifecycle.
    for v in vouchers:
        trail = pg.execute("SELECT from_status, to_status FROM voucher_events WHERE voucher_id = %s ORDER BY id",
                           (v,)).fetchall()
        for before, after in itertools.pairwise(trail):
            assert after["from_status"] == before["to_status"]
        assert trail[-1]["to_status"] == final[v]


def test_autocommit_turns_are_atomic_and_the_connection_goes_back_as_it_came(pg, db_env, monkeypatch) -> None:
    """``db.autocommit()`` (the batch's connection): each transition_many is its own transaction,
    a failing one leaves nothing behind, and the pool lends the connection out transactional again."""
    monkeypatch.setenv("DB_POOL_SIZE", "1")
    db.close_pool()
    first, second = (factories.voucher(pg, factories.beneficiary(pg)["id"], claimable=True)["id"] for _ in range(2))
    with db.autocommit() as conn:
        lent = conn
        assert transition_many(conn, [Change(first, "pending")], source="disburse", reference="t1")[0].applied
        with pytest.raises(psycopg.errors.DataError):  # one change PostgreSQL refuses: none of them applies
            transition_many(conn, [Change(second, "pending"), Change(first, "active", detail={"bad": "\x00"})],
                            source="disburse", reference="t2")
        assert conn.execute("SELECT 1 AS ok").fetchone() == {"ok": 1}  # usable for the next turn
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (first,)).fetchone()["status"] == "pending"
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (second,)).fetchone()["status"] == "issued"
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE reference = 't2'") == 0
    with db.connection() as conn:
        assert conn is lent and conn.autocommit is False
    db.close_pool()


def test_one_voucher_spelt_two_ways_is_refused_before_anything_changes(pg, db_env) -> None:
    v = factories.voucher(pg, factories.beneficiary(pg)["id"], claimable=True)["id"]
    with pytest.raises(ValueError, match="only once"), db.transaction() as conn:
        transition_many(conn, [Change(v, "pending"), Change(v.upper(), "cancelled")], source="operator",
                        reference="twice")
    with db.transaction() as conn:  # any spelling PostgreSQL accepts reaches the same voucher
        result = transition_many(conn, [Change("{" + v.upper().replace("-", "") + "}", "pending")],
                                 source="operator", reference="braces")[0]
    assert (result.outcome, result.voucher_id) == ("applied", v)
    assert [r["reference"] for r in pg.execute("SELECT reference FROM voucher_events WHERE voucher_id = %s "
                                               "ORDER BY id", (v,))] == ["test", "braces"]


def test_a_foreign_key_check_never_waits_on_a_transition(pg, clean_db) -> None:
    """A transaction holding a transition's lock on voucher A that then writes a row referencing
    voucher B (reconciliation records, webhook rows) while a batch holds B and waits for A: with
    FOR UPDATE that was a deadlock; FOR NO KEY UPDATE does not block the foreign-key check."""
    a, b = sorted(factories.voucher(pg, factories.beneficiary(pg)["id"], status="active", claimable=True)["id"] for _ in range(2))
    a, b = b, a  # the batch locks in id order: b (smaller) first, then waits for a
    errors: list[BaseException] = []
    batch_result: list[list[TransitionResult]] = []
    with psycopg.connect(clean_db) as holder:
        with holder.transaction():
            transition_many(holder, [Change(a, "redeemed")], source="reconcile", reference="holder")

            def batch() -> None:
                try:
                    with psycopg.connect(clean_db, autocommit=True) as conn:
                        batch_result.append(transition_many(conn, [Change(a, "expired"), Change(b, "expired")],
                                                            source="disburse", reference="batch"))
                except BaseException as exc:
                    errors.append(exc)

            worker = threading.Thread(target=batch)
            worker.start()
            deadline = time.monotonic() + 10
            waiting = 0
            while time.monotonic() < deadline and not waiting:
                time.sleep(0.02)  # until the batch holds b and waits for a
                waiting = factories.count(
                    pg, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                        "WHERE NOT l.granted AND l.locktype = 'transactionid' AND a.datname = current_database()")
            assert waiting == 1, "the batch never waited for the holder's lock: the test would prove nothing"
            holder.execute("SET LOCAL lock_timeout = '3s'")
            holder.execute("INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference) "
                           "VALUES (%s, 'active', 'active', 'reconcile', 'fk-check')", (b,))
        worker.join(timeout=30)
    assert errors == []
    assert [(r.voucher_id, r.outcome) for r in batch_result[0]] == [(a, "stale"), (b, "applied")]
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (a,)).fetchone()["status"] == "redeemed"
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (b,)).fetchone()["status"] == "expired"


def test_a_review_reason_with_a_percent_sign_reaches_the_database_intact(pg, db_env) -> None:
    """The decisions are literals in the body of a function migrate renders (dollar-quoted, called
    through a statement that takes %(name)s parameters)."""
    from smartpay.lifecycle import decision_table
    from smartpay.transitions import functions_sql

    rules = [("issued", "pending", "applied", "100% checked by 'ops' $$")]
    v = factories.voucher(pg, factories.beneficiary(pg)["id"], claimable=True)["id"]
    pg.execute(functions_sql(rules))
    try:
        with db.transaction() as conn:
            result = transition(conn, v, "pending", source="operator", reference="pct")
    finally:
        pg.execute(functions_sql(decision_table()))
    assert (result.outcome, result.review_reason) == ("applied", "100% checked by 'ops' $$")
    assert pg.execute("SELECT review_reason FROM vouchers WHERE id = %s", (v,)).fetchone() == {
        "review_reason": "100% checked by 'ops' $$"}


def test_a_connection_returned_in_autocommit_mid_transaction_comes_back_transactional(db_env, monkeypatch) -> None:
    """Belt and braces for db.autocommit(): the pool's reset hook restores transactional mode
    whatever a borrower left behind (here: autocommit switched on, then an explicit BEGIN left open)."""
    monkeypatch.setenv("DB_POOL_SIZE", "1")
    db.close_pool()
    with db.connection() as conn:
        conn.autocommit = True
        conn.execute("BEGIN")
        lent = conn
    with db.connection() as conn:
        assert conn is lent and conn.autocommit is False
        assert conn.execute("SELECT 1 AS ok").fetchone() == {"ok": 1}
    db.close_pool()
