"""Reconciliation through the local stack: the template's function, schedule and Lambda-to-Lambda
re-disbursement (reconcile → disburse → Buffr simulator), each function as its own database role."""

import time
from collections import Counter

import pytest

from smartpay_tools.local.scheduler import Scheduler, rate_seconds, scheduled_event
from tests import factories
from tests.fixtures_reconcile import at_buffr, seed_vouchers

pytestmark = pytest.mark.integration


def test_scheduled_event_reconciles_through_the_stack(local_stack, pg, sim) -> None:
    ids = seed_vouchers(pg, 30, status="active")
    at_buffr(sim, ids[:25], status="active")
    at_buffr(sim, ids[25:], status="redeemed")
    reply = local_stack.invoke("ReconcileFunction", scheduled_event("reconcile-test", local_stack.region))
    assert (reply["status"], reply["mode"], reply["checked"], reply["healed"], reply["remaining"]) == (
        "completed", "incremental", 30, 5, 0)
    rows = pg.execute("SELECT status, count(*) AS n FROM vouchers GROUP BY status").fetchall()
    assert {r["status"]: r["n"] for r in rows} == {"active": 25, "redeemed": 5}
    report = local_stack.invoke("ReconcileFunction", {"report": {"run_id": reply["run_id"]}})
    assert "checked 30: matched 25, healed 5, flagged 0" in report["text"]


def test_pending_unknown_is_redisbursed_once_through_the_disburse_function(local_stack, pg, sim) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="pending")
    pg.execute("UPDATE vouchers SET status_changed_at = now() - interval '2 hours' WHERE id = %s", (v["id"],))
    flagged = local_stack.invoke("ReconcileFunction", {"voucher_ids": [v["id"]]})
    assert (flagged["flagged"], flagged["redisbursed"]) == (1, 0)  # not enabled: a person decides
    reply = local_stack.invoke("ReconcileFunction", {"voucher_ids": [v["id"]], "redisburse_pending": True})
    assert (reply["redisbursed"], reply["flagged"], reply["checked"]) == (1, 0, 1)
    record = pg.execute("SELECT discrepancy, action, detail FROM reconciliation_records WHERE run_id = %s",
                        (reply["run_id"],)).fetchone()
    assert record["discrepancy"] == "pending_unknown" and record["action"] == "redisbursed"
    assert "active" in record["detail"]
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v["id"],)).fetchone()["status"] == "active"
    # Again: now Buffr knows it and the statuses agree; still exactly one wallet credit.
    again = local_stack.invoke("ReconcileFunction", {"voucher_ids": [v["id"]], "redisburse_pending": True})
    assert (again["matched"], again["redisbursed"]) == (1, 0)
    assert sim.stats(detail=True)["credits_per_voucher"] == {v["id"]: 1}
    trail = pg.execute("SELECT from_status, to_status, source FROM voucher_events WHERE voucher_id = %s ORDER BY id",
                       (v["id"],)).fetchall()
    assert [(t["from_status"], t["to_status"], t["source"]) for t in trail] == [
        (None, "issued", "operator"), ("issued", "pending", "operator"), ("pending", "active", "disburse")]


def test_the_local_scheduler_fires_the_templates_schedule(local_stack, pg, sim) -> None:
    assert rate_seconds("rate(15 minutes)") == 900 and rate_seconds("rate(1 hour)") == 3600
    with pytest.raises(ValueError, match="rate\\(1 minute\\)"):
        rate_seconds("rate(1 minutes)")
    with pytest.raises(ValueError, match="cron"):
        rate_seconds("cron(0 * * * ? *)")
    ids = seed_vouchers(pg, 4, status="active")
    at_buffr(sim, ids, status="active")
    scheduler = Scheduler(local_stack.functions, local_stack.invoke, local_stack.region, rate_override="0.3")
    assert [(lid, s.schedule) for lid, s, _ in scheduler.schedules()] == [("ReconcileFunction", "rate(15 minutes)")]
    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while not scheduler.fired and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
    assert scheduler.fired, "the schedule never fired"
    first = scheduler.fired[0]
    assert first.ok and first.logical_id == "ReconcileFunction", first.result
    assert first.result["stopped"] in (None, "busy")
    runs = pg.execute("SELECT mode, status FROM reconciliation_runs").fetchall()
    assert Counter(r["mode"] for r in runs) == Counter({"incremental": len(runs)}) and runs


def test_operator_command_reconciles_now_in_shards(pg, pg_url, sim, capsys) -> None:
    from smartpay_tools.cli import main

    ids = seed_vouchers(pg, 40, status="active")
    at_buffr(sim, ids[:36], status="active")
    at_buffr(sim, ids[36:], status="redeemed")
    code = main(["--database-url", pg_url, "reconcile", "--mode", "full", "--shards", "2", "--quiet",
                 "--buffr-url", sim.url])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.startswith("run ")]
    assert len(lines) == 2 and all("[completed]" in line and "remaining 0" in line for line in lines)
    runs = pg.execute("SELECT shard, shards, checked, healed, status FROM reconciliation_runs ORDER BY shard").fetchall()
    assert [(r["shard"], r["shards"], r["status"]) for r in runs] == [(0, 2, "completed"), (1, 2, "completed")]
    assert sum(r["checked"] for r in runs) == 40 and sum(r["healed"] for r in runs) == 4
