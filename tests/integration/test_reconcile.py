"""Reconciliation against the Buffr simulator over HTTP, on the real database as the reconcile role.

Every test asserts the exact final state: records per class and action, voucher statuses,
audit rows written by reconciliation, and the run's counters.
"""

import hashlib
import random
import re
from collections import Counter
from typing import Any

import pytest

from reconcile import service
from reconcile.models import ReconcileRequest
from smartpay_tools.buffr_sim.webhook_sender import payload
from tests import factories
from tests.fixtures_reconcile import at_buffr, lambda_context, seed_vouchers

pytestmark = pytest.mark.integration


def _run(**kw: Any) -> Any:
    seconds = kw.pop("seconds", 60.0)
    return service.reconcile(ReconcileRequest(**kw), lambda_context(seconds))


def _records(pg, run_id: str) -> dict[str, dict[str, Any]]:
    rows = pg.execute("SELECT voucher_id::text AS v, discrepancy, action, match, buffr_status "
                      "FROM reconciliation_records WHERE run_id = %s", (run_id,)).fetchall()
    return {r["v"]: r for r in rows}


def _statuses(pg, ids: list[str]) -> Counter:
    rows = pg.execute("SELECT status FROM vouchers WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()
    return Counter(r["status"] for r in rows)


def _snapshot(pg) -> tuple[list, list]:
    vouchers = pg.execute("SELECT id, status, version, buffr_delivery_id, review_reason, status_changed_at "
                          "FROM vouchers ORDER BY id").fetchall()
    events = pg.execute("SELECT id, voucher_id, from_status, to_status, source FROM voucher_events ORDER BY id").fetchall()
    return vouchers, events


def _drift(pg, sim, webhook=None) -> dict[str, list[str]]:
    """A cycle after disbursement and webhooks, with the drift reconciliation must find.

    100 redemptions happened at Buffr; 10 % of their webhooks were dropped (Ketchup still active).
    With ``webhook`` the other 90 go through the real webhook function (signed, as its own role);
    without, their effect is written directly.
    """
    g: dict[str, list[str]] = {}
    redeemed = seed_vouchers(pg, 100, status="active")
    at_buffr(sim, redeemed, status="redeemed")
    rng = random.Random(5)
    dropped = set(rng.sample(redeemed, 10))
    g["dropped_webhook"] = [v for v in redeemed if v in dropped]  # still active here
    g["redeemed_both"] = [v for v in redeemed if v not in dropped]
    if webhook is not None:
        for v in g["redeemed_both"]:
            reply = webhook.deliver(payload("voucher.redeemed", v, delivery_id=f"dlv_{v[:8]}", amount_cents=140000,
                                             channel="wallet"))
            assert reply.status == 200 and reply.body.get("outcome") == "applied", reply
    else:
        pg.execute("UPDATE vouchers SET status = 'redeemed', status_changed_at = now() - interval '5 minutes' "
                   "WHERE id = ANY(%s::uuid[])", (g["redeemed_both"],))
    g["expired_only_at_buffr"] = seed_vouchers(pg, 5, status="active")
    at_buffr(sim, g["expired_only_at_buffr"], status="expired")
    g["lost_ack"] = seed_vouchers(pg, 8, status="pending")
    at_buffr(sim, g["lost_ack"], status="active")
    g["unknown"] = seed_vouchers(pg, 6, status="active")
    g["pending_unknown"] = seed_vouchers(pg, 4, status="pending", age_seconds=3600)
    g["pending_in_grace"] = seed_vouchers(pg, 2, status="pending", age_seconds=30)
    g["amount"] = seed_vouchers(pg, 1, status="active")
    at_buffr(sim, g["amount"], status="active", amount=150000)
    g["ketchup_ahead"] = seed_vouchers(pg, 3, status="redeemed", age_seconds=600)
    at_buffr(sim, g["ketchup_ahead"], status="active")
    g["expired_here_redeemed_there"] = seed_vouchers(pg, 2, status="expired", age_seconds=600)
    at_buffr(sim, g["expired_here_redeemed_there"], status="redeemed")
    g["redeemed_here_expired_there"] = seed_vouchers(pg, 1, status="redeemed", age_seconds=600)
    at_buffr(sim, g["redeemed_here_expired_there"], status="expired")
    g["match"] = seed_vouchers(pg, 40, status="active")
    at_buffr(sim, g["match"], status="active")
    g["old_closed"] = seed_vouchers(pg, 5, status="redeemed", age_seconds=40 * 86400)  # outside every window
    return g


EXPECTED = {  # group → (class, action, status afterwards)
    "dropped_webhook": ("buffr_ahead", "healed", "redeemed"),
    "redeemed_both": (None, "none", "redeemed"),
    "expired_only_at_buffr": ("buffr_ahead", "healed", "expired"),
    "lost_ack": ("buffr_ahead", "healed", "active"),
    "unknown": ("unknown_at_buffr", "flagged", "active"),
    "pending_unknown": ("pending_unknown", "flagged", "pending"),
    "pending_in_grace": ("pending_in_grace", "none", "pending"),
    "amount": ("amount_mismatch", "flagged", "active"),
    "ketchup_ahead": ("ketchup_ahead", "flagged", "redeemed"),
    "expired_here_redeemed_there": ("redeemed_vs_expired", "flagged", "redeemed"),
    "redeemed_here_expired_there": ("redeemed_vs_expired", "flagged", "redeemed"),
    "match": (None, "none", "active"),
}


def test_drift_is_healed_or_flagged_with_exact_counts(reconcile_env, webhook, pg, sim) -> None:
    groups = _drift(pg, sim, webhook)
    assert factories.count(pg, "SELECT count(*) FROM webhook_events WHERE outcome = 'applied'") == 90
    reconcile_env["activate"]()  # back to the reconcile function's role and settings
    reply = _run(mode="incremental")
    assert reply.status == "completed" and reply.remaining == 0 and not reply.resumed
    records = _records(pg, str(reply.run_id))
    selected = [v for g, ids in groups.items() if g != "old_closed" for v in ids]
    assert set(records) == set(selected)  # every open / recently changed voucher, nothing older
    for group, (klass, action, status) in EXPECTED.items():
        got = {(records[v]["discrepancy"], records[v]["action"]) for v in groups[group]}
        assert got == {(klass, action)}, group
        assert _statuses(pg, groups[group]) == Counter({status: len(groups[group])}), group
    healed = 10 + 5 + 8
    flagged = 6 + 4 + 1 + 3 + 2 + 1
    matched = 90 + 40
    assert (reply.checked, reply.healed, reply.flagged, reply.matched) == (len(selected), healed, flagged, matched)
    assert reply.discrepancies == {"buffr_ahead": 23, "unknown_at_buffr": 6, "pending_unknown": 4,
                                   "pending_in_grace": 2, "amount_mismatch": 1, "ketchup_ahead": 3,
                                   "redeemed_vs_expired": 3}
    run = pg.execute("SELECT checked, matched, healed, flagged, status FROM reconciliation_runs WHERE id = %s",
                     (str(reply.run_id),)).fetchone()
    assert run == {"checked": len(selected), "matched": matched, "healed": healed, "flagged": flagged,
                   "status": "completed"}
    # Audit trail: one row per status change, source reconcile, the run id as the reference.
    trail = pg.execute("SELECT from_status, to_status, reference FROM voucher_events WHERE source = 'reconcile'"
                       ).fetchall()
    assert len(trail) == healed + 2 and {t["reference"] for t in trail} == {str(reply.run_id)}
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'webhook'") == 90
    assert Counter((t["from_status"], t["to_status"]) for t in trail) == Counter(
        {("active", "redeemed"): 10, ("active", "expired"): 5, ("pending", "active"): 8, ("expired", "redeemed"): 2})
    # The lost acknowledgement got Buffr's delivery id; the override is marked for review.
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE id = ANY(%s::uuid[]) AND buffr_delivery_id "
                               "LIKE 'dlv_%%'", groups["lost_ack"]) == 8
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE review_reason IS NOT NULL") == 2

    # A second run (window reaching the old vouchers too) finds the healed vouchers matching, flags
    # the rest again, plus the five old redeemed vouchers Buffr no longer knows, and changes nothing.
    again = _run(mode="incremental", since="2000-01-01T00:00:00Z")
    assert again.run_id != reply.run_id and again.healed == 0 and again.flagged == flagged - 2 + 5
    assert again.discrepancies["unknown_at_buffr"] == 6 + 5 and again.discrepancies["redeemed_vs_expired"] == 1
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'reconcile'") == healed + 2


def test_dry_run_changes_nothing(reconcile_env, pg, sim) -> None:
    groups = _drift(pg, sim)
    before = _snapshot(pg)
    calls_before = sim.stats()["calls"]
    reply = _run(mode="full", dry_run=True, redisburse_pending=True)
    assert reply.dry_run and reply.status == "completed"
    assert _snapshot(pg) == before
    assert sim.stats()["calls"].get("disburse", 0) == calls_before.get("disburse", 0)
    records = _records(pg, str(reply.run_id))
    assert {records[v]["action"] for v in groups["dropped_webhook"]} == {"healed"}  # planned, not done
    assert {records[v]["action"] for v in groups["pending_unknown"]} == {"redisbursed"}
    assert reply.healed == 23
    # The dry run is its own split: a real run afterwards starts fresh and does the work.
    real = _run(mode="full")
    assert real.run_id != reply.run_id and not real.resumed and real.healed == 23


def test_deadline_mid_run_resumes_and_checks_each_voucher_once(reconcile_env, pg, sim) -> None:
    ids = seed_vouchers(pg, 300, status="active")
    at_buffr(sim, ids[:290], status="active")
    at_buffr(sim, ids[290:], status="redeemed")
    sim.configure(latency_ms=40)
    replies = []
    for _ in range(40):
        reply = _run(mode="incremental", page_size=25, concurrency=10, seconds=1.0)
        replies.append(reply)
        if reply.status == "completed":
            break
    assert replies[-1].status == "completed" and len(replies) >= 3
    assert len({r.run_id for r in replies}) == 1 and all(r.resumed for r in replies[1:])
    assert any(r.stopped == "deadline" for r in replies[:-1])
    assert [r.remaining for r in replies] == sorted((r.remaining for r in replies), reverse=True)
    assert sum(r.invocation_checked for r in replies) == 300
    run_id = str(replies[-1].run_id)
    per_voucher = pg.execute("SELECT voucher_id, count(*) AS n FROM reconciliation_records WHERE run_id = %s "
                             "GROUP BY voucher_id", (run_id,)).fetchall()
    assert len(per_voucher) == 300 and {r["n"] for r in per_voucher} == {1}
    final = replies[-1]
    assert (final.checked, final.matched, final.healed, final.flagged, final.unavailable) == (300, 290, 10, 0, 0)
    assert pg.execute("SELECT invocations FROM reconciliation_runs WHERE id = %s", (run_id,)).fetchone()[
        "invocations"] == len(replies)


def _shard_of(voucher_id: str, shards: int) -> int:
    return int(hashlib.md5(voucher_id.encode()).hexdigest()[:8], 16) % shards  # noqa: S324 (not security)


def test_shards_cover_every_open_voucher_exactly_once(reconcile_env, pg, sim) -> None:
    open_ids = seed_vouchers(pg, 150, status="active") + seed_vouchers(pg, 30, status="pending", age_seconds=30)
    closed_recent = seed_vouchers(pg, 20, status="redeemed", age_seconds=600)
    seed_vouchers(pg, 10, status="expired", age_seconds=90 * 86400)
    at_buffr(sim, open_ids[:150] + closed_recent, status="active")
    shards = 3
    seen: dict[str, int] = {}
    for shard in range(shards):
        reply = _run(mode="full", shard=shard, shards=shards)
        assert reply.status == "completed" and (reply.shard, reply.shards) == (shard, shards)
        for v in _records(pg, str(reply.run_id)):
            assert v not in seen, f"{v} checked by shards {seen[v]} and {shard}"
            seen[v] = shard
    assert set(seen) == set(open_ids + closed_recent)
    assert all(_shard_of(v, shards) == s for v, s in seen.items())  # the same stable hash as the SQL
    assert len(set(seen.values())) == shards


def test_explicit_voucher_ids_and_unavailable_buffr(reconcile_env, pg, sim) -> None:
    ids = seed_vouchers(pg, 5, status="active")
    at_buffr(sim, ids, status="redeemed")
    sim.configure(error_rate=1.0)  # Buffr answers 503 to everything
    reply = _run(voucher_ids=ids[:3])
    assert reply.mode == "vouchers" and reply.checked == 3 and reply.unavailable == 3 and reply.healed == 0
    assert _statuses(pg, ids) == Counter({"active": 5})
    sim.configure(error_rate=0.0)
    reply = _run(voucher_ids=ids[:3])
    assert reply.healed == 3 and _statuses(pg, ids[:3]) == Counter({"redeemed": 3})


def test_busy_shard_split_is_not_run_twice(reconcile_env, pg, sim, pg_url) -> None:
    import psycopg

    from reconcile import repository
    from smartpay import leases

    seed_vouchers(pg, 3, status="active")
    with psycopg.connect(pg_url, autocommit=True) as other:
        holder = leases.acquire(other, repository.lease_name(0, 1, False), 60)
        assert holder is not None
        reply = _run(mode="incremental")
        assert reply.stopped == "busy" and reply.invocation_checked == 0
        leases.release(other, repository.lease_name(0, 1, False), holder)
    assert factories.count(pg, "SELECT count(*) FROM reconciliation_records") == 0
    # Released (or lapsed, for a killed holder): the next invocation works and frees the lease.
    assert _run(mode="incremental").invocation_checked == 3
    assert factories.count(pg, "SELECT count(*) FROM smartpay_leases") == 0


def test_a_killed_holders_lease_lapses_at_its_expiry(reconcile_env, pg, sim, pg_url) -> None:
    import psycopg

    from reconcile import repository
    from smartpay import leases

    seed_vouchers(pg, 2, status="active")
    name = repository.lease_name(0, 1, False)
    with psycopg.connect(pg_url, autocommit=True) as dead:
        assert leases.acquire(dead, name, 60) is not None  # never released: the holder was killed
        assert _run(mode="incremental").stopped == "busy"
        dead.execute("UPDATE smartpay_leases SET expires_at = now() - interval '1 second' WHERE name = %s", (name,))
    assert _run(mode="incremental").invocation_checked == 2


def test_reports_per_run_and_per_cycle(reconcile_env, pg, sim, pg_url, tmp_path, capsys) -> None:
    import csv

    from smartpay_tools.cli import main

    groups = _drift(pg, sim)
    reply = _run(mode="incremental")
    run_id = str(reply.run_id)
    figures, records = tmp_path / "run.csv", tmp_path / "records.csv"
    assert main(["--database-url", pg_url, "report", "--run", run_id, "--csv", str(figures),
                 "--records", str(records)]) == 0
    text = capsys.readouterr().out
    assert f"Reconciliation run {run_id}" in text
    assert "checked 172: matched 130, healed 23, flagged 17, re-sent 0, Buffr unavailable 0" in text
    assert re.search(r"amount_mismatch +flagged +1 +N\$ 1,400.00 +N\$ 1,500.00", text)
    rows = list(csv.DictReader(figures.open()))
    by = {(r["section"], r["key"], r["action"]): r for r in rows}
    assert by[("discrepancy", "buffr_ahead", "healed")]["count"] == "23"
    assert by[("discrepancy", "match", "none")]["count"] == "130"
    # Amounts of the checked vouchers by their status now: redeemed 90 + 10 healed + 3 + 2 + 1.
    redeemed_now = 90 + 10 + 3 + 2 + 1
    assert by[("amount", "redeemed", "")]["amount_cents"] == str(redeemed_now * 140000)
    assert int(by[("amount", "issued", "")]["amount_cents"]) == 172 * 140000
    exported = list(csv.DictReader(records.open()))
    assert len(exported) == 23 + 17 + 2  # healed, flagged and the two pending within grace
    assert {r["voucher_id"] for r in exported} >= set(groups["unknown"])

    assert main(["--database-url", pg_url, "report", "--cycle", "2026-11", "--programme", "old_age"]) == 0
    text = capsys.readouterr().out
    assert "Programme cycle old_age 2026-11" in text and "177 vouchers" in text
    assert "vouchers checked by 1 run(s)" in text

    assert main(["--database-url", pg_url, "report", "--run", "not-a-run"]) == 2
