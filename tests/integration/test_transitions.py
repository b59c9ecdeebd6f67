"""Every status change goes through one writer: row lock, lifecycle decision, audit row, one transaction."""

import contextlib
import threading

import psycopg
import pytest

from smartpay import db
from smartpay.transitions import transition
from tests import factories

pytestmark = pytest.mark.integration


def test_applied_transition_writes_one_audit_row(pg, db_env) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"])
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
    v = factories.voucher(pg, b["id"], status="active")
    with db.transaction() as conn:
        assert transition(conn, v["id"], "pending", source="webhook", reference="w1").outcome == "stale"
        assert transition(conn, v["id"], "active", source="webhook", reference="w2").outcome == "duplicate"
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"]) == 1
    assert pg.execute("SELECT version FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["version"] == 1


def test_failure_rolls_back_status_and_audit_together(pg, db_env) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"])
    with pytest.raises(RuntimeError), db.transaction() as conn:
        transition(conn, v["id"], "pending", source="disburse", reference="r")
        raise RuntimeError("crash after the update")
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["status"] == "issued"
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"]) == 1


@pytest.mark.parametrize("fail", [False, True])
def test_pipelined_transaction_commits_or_rolls_back_as_one(pg, db_env, fail: bool) -> None:
    """``db.transaction(pipelined=True)``: the queued UPDATE + audit INSERT commit, or vanish, together."""
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"])
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
    v = factories.voucher(pg, b["id"], status="active")
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
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v["id"]) == 2


def test_redeemed_after_expired_is_applied_and_flagged(pg, db_env) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="expired")
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
