"""The demo's figures: read back from PostgreSQL and the simulator after the cycle, and checked.

Nothing is computed on the side: every number in the report comes from :func:`collect`, and
:func:`check` says what must hold at the end of any cycle.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from smartpay import compliance
from smartpay_tools.cli.compliance import auditor_url
from smartpay_tools.local.function_code import import_module

recon_report = import_module("reconcile", "reconcile.report")  # the reconcile function's own module


def collect(database_url: str, cycle: str, run_ids: list[str], buffr: dict[str, Any]) -> dict[str, Any]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        statuses = conn.execute(
            """SELECT programme, status, count(*)::int AS count, sum(amount_cents)::bigint AS amount_cents
                 FROM vouchers WHERE cycle = %s GROUP BY 1, 2 ORDER BY 1, 2""", (cycle,)).fetchall()
        programmes = sorted({r["programme"] for r in statuses})
        cycles = {p: recon_report.cycle_report(conn, p, cycle) for p in programmes}
        runs = [recon_report.run_report(conn, run_id) for run_id in run_ids]
        webhooks = conn.execute(
            "SELECT outcome, count(*)::int AS count FROM webhook_events GROUP BY 1 ORDER BY 1").fetchall()
        latency = conn.execute(
            """SELECT count(*)::int AS n,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, min(ms) AS min, max(ms) AS max
                 FROM (SELECT extract(epoch FROM received_at - occurred_at) * 1000 AS ms
                         FROM webhook_events WHERE occurred_at IS NOT NULL AND outcome = 'applied') l""").fetchone()
        bounds = compliance.latency_bounds(latency["min"], latency["max"])
        labels = compliance.latency_labels(bounds)
        histogram = [{"bucket": labels[r["bucket"]], "count": r["count"]} for r in conn.execute(
            """SELECT width_bucket(greatest(extract(epoch FROM received_at - occurred_at) * 1000, 0)::float8,
                                  %s::float8[]) AS bucket, count(*)::int AS count
                 FROM webhook_events WHERE occurred_at IS NOT NULL AND outcome = 'applied'
                GROUP BY 1 ORDER BY 1""", (bounds,))]
        audit = conn.execute(
            """SELECT source, count(*)::int AS count FROM voucher_events GROUP BY 1 ORDER BY 1""").fetchall()
        review = conn.execute(
            "SELECT count(*)::int AS n FROM vouchers WHERE cycle = %s AND review_reason IS NOT NULL",
            (cycle,)).fetchone()["n"]
        ineligible_rows = conn.execute(
            """SELECT b.status AS beneficiary, v.status AS voucher, v.id::text AS id, v.review_reason IS NOT NULL AS review
                 FROM vouchers v JOIN beneficiaries b ON b.id = v.beneficiary_id
                WHERE v.cycle = %s AND b.status <> 'active' ORDER BY 1, 2""", (cycle,)).fetchall()
    credits = buffr.get("credits_per_voucher", {})
    ineligible: dict[tuple[str, str], dict[str, int]] = {}
    for row in ineligible_rows:
        slot = ineligible.setdefault((row["beneficiary"], row["voucher"]), {"vouchers": 0, "paid": 0, "review": 0})
        slot["vouchers"] += 1
        slot["paid"] += int(credits.get(row["id"], 0))
        slot["review"] += int(row["review"])
    discrepancies: dict[tuple[str, str], int] = {}
    for run in runs:
        for row in run["discrepancies"]:
            if row["class"] != "match":
                key = (row["class"], row["action"])
                discrepancies[key] = discrepancies.get(key, 0) + int(row["count"])
    return {
        "cycle": cycle,
        "statuses": statuses,
        "cycles": cycles,
        "runs": [r["run"] for r in runs],
        "discrepancies": [{"class": c, "action": a, "count": n} for (c, a), n in sorted(discrepancies.items())],
        "webhook_outcomes": webhooks,
        "webhook_latency_ms": {k: (int(v) if k == "n" else round(float(v), 1) if v is not None else None)
                               for k, v in latency.items()},
        "webhook_latency_histogram": histogram,
        "audit_rows": audit,
        "under_review": review,
        "ineligible": [{"beneficiary": b, "voucher": v, **counts} for (b, v), counts in sorted(ineligible.items())],
        "buffr": {
            "credits": buffr["credits"],
            "vouchers_credited": buffr["vouchers_credited"],
            "double_credited": len(buffr["double_credited"]),
            "statuses": buffr.get("statuses", {}),
            "webhooks": {k: buffr["webhooks"][k] for k in
                         ("planned", "attempts", "duplicated", "reordered", "dropped", "failed", "replayed")},
        },
    }


def simulator_metrics(buffr: dict[str, Any]) -> compliance.MetricTotals:
    """The idempotency figures as Buffr's simulator saw them, for the compliance report: webhook
    requests answered 200 and, of those, answers marked ``Idempotent-Replayed``. The demo issues
    through the payroll import and pays through runs (no per-request idempotency), so issue has
    no requests. Route figures cover the demo's whole run (all programmes), as CloudWatch's do."""
    webhooks = buffr["webhooks"]
    return compliance.totals_from({("IdempotentRequests", "webhook"): webhooks["statuses"].get("200", 0),
                                   ("IdempotencyReplays", "webhook"): webhooks["replayed"],
                                   ("IdempotentRequests", "issue"): 0, ("IdempotencyReplays", "issue"): 0})


def compliance_reports(database_url: str, cycle: str, buffr: dict[str, Any],
                       anchors: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Each programme's compliance report (smartpay.compliance), read as the read-only ``auditor``
    role, with Buffr's duplicate count taken from the simulator's own counter and the latest audit
    anchor (of ``anchors``, the stack's bucket) the database agrees with."""
    with psycopg.connect(auditor_url(database_url), autocommit=True) as conn:
        programmes = [r[0] for r in conn.execute(
            "SELECT DISTINCT programme FROM vouchers WHERE cycle = %s ORDER BY 1", (cycle,))]
        return {p: compliance.report(conn, p, cycle, metrics=simulator_metrics(buffr),
                                     buffr_duplicates_refused=buffr.get("duplicates_refused"), anchors=anchors)
                for p in programmes}


def status_totals(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for row in report["statuses"]:
        slot = totals.setdefault(row["status"], {"count": 0, "amount_cents": 0})
        slot["count"] += row["count"]
        slot["amount_cents"] += int(row["amount_cents"])
    return totals


def check(report: dict[str, Any], flushed: bool) -> list[str]:
    """What must hold at the end of any cycle; a failed check fails the demo (exit 1)."""
    problems = []
    b = report["buffr"]
    if b["double_credited"]:
        problems.append(f"{b['double_credited']} vouchers were credited twice at Buffr")
    if not flushed:
        problems.append("the simulator's webhook queue did not drain")
    if any(run["status"] != "completed" for run in report["runs"]):
        problems.append("a reconciliation run did not complete")
    totals = status_totals(report)
    if totals.get("issued", {}).get("count"):
        problems.append(f"{totals['issued']['count']} vouchers were never disbursed")
    rejected = sum(r["count"] for r in report["webhook_outcomes"] if r["outcome"] == "rejected")
    if rejected:
        problems.append(f"{rejected} webhooks were rejected (unknown vouchers: is another demo using the database?)")
    flagged = [d for d in report["discrepancies"] if d["action"] == "flagged"]
    if flagged:  # the demo's drift (dropped webhooks, Buffr-only redemptions) is all healable
        problems.append("reconciliation flagged " + ", ".join(f"{d['count']} {d['class']}" for d in flagged))
    healed = sum(d["count"] for d in report["discrepancies"] if d["action"] == "healed")
    if healed < report.get("buffr_only", 0):
        problems.append(f"only {healed} vouchers healed, fewer than the {report['buffr_only']} Buffr-only redemptions")
    if not report["runs"] or not any(run["matched"] for run in report["runs"]):
        problems.append("reconciliation matched no voucher")
    held_or_cancelled = [r for r in report["ineligible"] if r["voucher"] in ("held", "cancelled")]
    if not held_or_cancelled:
        problems.append("no beneficiary became ineligible before payment (the demo's registry change did not act)")
    paid_ineligible = sum(r["paid"] for r in held_or_cancelled)
    if paid_ineligible:
        problems.append(f"{paid_ineligible} held or cancelled vouchers of ineligible beneficiaries were paid at Buffr")
    if totals.get("pending", {}).get("count") or totals.get("failed", {}).get("count"):
        problems.append("vouchers were left pending or failed although Buffr had no faults on disbursement")
    if not report.get("compliance"):
        problems.append("no compliance report was produced")
    for programme, c in report.get("compliance", {}).items():
        failed = [name for name, ok in compliance.checks(c).items() if not ok]
        if failed:
            problems.append(f"compliance {programme} {c['cycle']}: " + ", ".join(failed) + " FAILED")
    return problems
