"""``smartpay demo`` — the main job: a whole pay cycle on the local stack, start to report.

1. Brings up the local stack: a fresh ``smartpay_demo`` database (the machine's PostgreSQL, or
   a throwaway server), moto's DynamoDB, the Buffr simulator and the API gateway.
2. Generates a programme cycle (synthetic payroll) and imports it: beneficiaries upserted,
   vouchers issued.
3. Disburses every programme of the cycle through the API (``POST /api/v1/disbursements``);
   after the first programme the registry changes mid-cycle (``import-beneficiaries``): some
   beneficiaries not yet paid are suspended or have died (their vouchers are held or cancelled:
   0 paid), and a few already paid have died (flagged for review).
4. Lets Buffr's simulator report back with faults: duplicated and reordered webhooks, ~5 %
   dropped, and some redemptions that happen only at Buffr (no webhook at all).
5. Runs reconciliation (the template's ReconcileFunction, invocation after invocation).
6. Prints the end-of-cycle report with each programme's compliance section (as the read-only
   auditor role) and writes it as CSV and as one self-contained HTML page; then runs
   ``smartpay audit verify`` over the whole audit trail, which must pass.

Every figure in the report is read back from PostgreSQL or from the simulator's own counters;
nothing is computed on the side.
"""

from __future__ import annotations

import csv
import html
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from smartpay import compliance, compliance_render, recon_report
from smartpay_tools import PROJECT_ROOT
from smartpay_tools.cli import disburse_cycle
from smartpay_tools.data import datagen, payroll_import, registry_import
from smartpay_tools.local.gateway import Gateway, docs_routes, serve
from smartpay_tools.local.services import drop_database, ensure_database, resolve_postgres
from smartpay_tools.local.stack import LocalStack

DEMO_DB = "smartpay_demo"
#: Buffr's behaviour in the demo: most vouchers settle, with the faults Buffr really shows.
WEBHOOK_FAULTS = {"enabled": True, "settle_rate": 0.7, "redeem_rate": 0.85, "duplicate_rate": 0.1,
                  "reorder_rate": 0.1, "drop_rate": 0.05, "delay_ms": 0, "jitter_ms": 0}
BUFFR_ONLY_SHARE = 0.02  # of the vouchers still active: redeemed at Buffr with no webhook at all
INELIGIBLE_SHARE = 0.01  # of the beneficiaries not yet paid: suspended or deceased mid-cycle (half each)
DECEASED_AFTER_PAYMENT = 5  # beneficiaries already paid who die mid-cycle: flagged for review


@dataclass
class Step:
    name: str
    seconds: float
    note: str


@dataclass
class DemoResult:
    cycle: str
    database: str
    steps: list[Step] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    ok: bool = False


def _say(message: str) -> None:
    print(message, flush=True)


def fresh_database(database_url: str | None, name: str = DEMO_DB) -> tuple[str, str]:
    """A new, empty demo database on whichever server the stack would use; returns (url, origin)."""
    server = resolve_postgres(database_url, dbname=name)
    admin = make_conninfo(server.url, dbname="postgres")
    drop_database(admin, name)
    return ensure_database(admin, name), server.origin


def run(*, port: int, beneficiaries: int, out_dir: Path, database_url: str | None = None,
        keep_serving: bool = False, env_vars: Path | None = None, seed: int = 2026,
        database_name: str = DEMO_DB) -> int:
    started = time.monotonic()
    cycle = datetime.now(UTC).strftime("%Y-%m")
    url, origin = fresh_database(database_url, database_name)
    result = DemoResult(cycle=cycle, database=origin)
    base = f"http://127.0.0.1:{port}"
    stack = LocalStack(env_file_path=env_vars, database_url=url, simulator_port=0, webhook_url=base,
                       webhook_knobs=dict(WEBHOOK_FAULTS), max_concurrency=4)
    server = None
    try:
        t = time.monotonic()
        stack.start_services()
        server = serve(Gateway(stack, extra_routes=docs_routes()), port=port)
        result.steps.append(Step("local stack", time.monotonic() - t,
                                 f"PostgreSQL ({origin}, database {database_name}), moto DynamoDB, Buffr simulator, "
                                 f"gateway {base}"))
        _say(f"[1/6] local stack up: {result.steps[-1].note}")

        t = time.monotonic()
        with tempfile.TemporaryDirectory() as work:  # the payroll file holds (synthetic) PII: never kept
            payroll_csv = Path(work) / f"payroll-{cycle}.csv"
            with payroll_csv.open("w", newline="") as handle:
                rows = datagen.write_csv(datagen.payroll(beneficiaries, cycle, seed), handle,
                                         datagen.PAYROLL_FIELDS)
            imported = payroll_import.import_file(stack.postgres.url, payroll_csv)
        result.steps.append(Step("payroll import", time.monotonic() - t,
                                 f"{rows} payroll rows for {beneficiaries} generated beneficiaries; "
                                 f"{imported.vouchers_issued} vouchers issued, {len(imported.rejected)} rejected"))
        _say(f"[2/6] payroll imported: {result.steps[-1].note}")

        t = time.monotonic()
        key = stack.local["OperatorApiKey"]
        outcomes: dict[str, int] = {}
        changed: dict[str, int] = {}
        for n, programme in enumerate(sorted(datagen.PROGRAMMES)):
            if n == 1:  # mid-cycle: the registry changes between two programmes' payments
                changed = _registry_changes_mid_cycle(stack, cycle, programme_paid=sorted(datagen.PROGRAMMES)[0],
                                                      seed=seed)
            summary = disburse_cycle.run(base, key, programme, cycle, batch_size=1000)
            for outcome, count in summary.outcomes.items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        result.steps.append(Step("disbursement", time.monotonic() - t,
                                 "through POST /api/v1/disbursements: "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
                                 + "; registry changed mid-cycle: "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(changed.items()))))
        _say(f"[3/6] disbursed: {result.steps[-1].note}")

        t = time.monotonic()
        flushed = stack.buffr.flush_webhooks(timeout_s=240)
        buffr_only = _buffr_only_redemptions(stack, seed)
        result.steps.append(Step("Buffr reports back", time.monotonic() - t,
                                 f"webhooks delivered ({'all answered' if flushed else 'queue NOT drained'}); "
                                 f"{buffr_only} redemptions made only at Buffr (no webhook)"))
        _say(f"[4/6] webhooks: {result.steps[-1].note}")

        t = time.monotonic()
        run_ids = _reconcile(stack)
        result.steps.append(Step("reconciliation", time.monotonic() - t,
                                 f"{len(run_ids)} run(s), ReconcileFunction invoked until complete"))
        _say(f"[5/6] reconciled: {result.steps[-1].note}")

        t = time.monotonic()
        buffr_stats = stack.buffr.stats(detail=True)
        result.report = {**collect(stack.postgres.url, cycle, run_ids, buffr_stats), "buffr_only": buffr_only}
        result.report["compliance"] = compliance_reports(stack.postgres.url, cycle, buffr_stats)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        csv_path, html_path = out_dir / f"demo-{stamp}.csv", out_dir / f"demo-{stamp}.html"
        write_csv(result.report, csv_path)
        html_path.write_text(render_html(result.report, result.steps))
        result.files = [csv_path, html_path]
        result.steps.append(Step("report", time.monotonic() - t, f"{csv_path.name}, {html_path.name}"))
        _say("[6/6] report\n")
        _say(render_text(result.report))
        problems = check(result.report, flushed)
        _say("\n$ smartpay audit verify")
        if not verify_audit_trail(stack.postgres.url):
            problems.append("the audit trail's hash chains do not verify")
        result.ok = not problems
        for problem in problems:
            _say(f"PROBLEM: {problem}")
        _say(f"\nwritten: {csv_path}\n         {html_path}")
        _say(f"demo {'passed' if result.ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
        if keep_serving and result.ok:
            _say(f"\nstill serving on {base} (Swagger UI: {base}/docs); Ctrl-C to stop")
            _wait()
        return 0 if result.ok else 1
    finally:
        if server is not None:
            server.shutdown()
        stack.stop()


def _registry_changes_mid_cycle(stack: LocalStack, cycle: str, *, programme_paid: str, seed: int) -> dict[str, int]:
    """The registry's news arrives mid-cycle, through the operator's own path (a registry CSV
    imported with ``import-beneficiaries``): some beneficiaries not yet paid are suspended or
    have died, and a few already paid have died. The file (synthetic PII) is never kept."""
    rng = random.Random(seed + 1)
    columns = ", ".join(f"b.{f}" for f in datagen.FIELDS)
    with psycopg.connect(stack.postgres.url, row_factory=dict_row) as conn:
        unpaid = conn.execute(
            f"""SELECT {columns} FROM beneficiaries b JOIN vouchers v ON v.beneficiary_id = b.id
                 WHERE v.cycle = %s AND v.status = 'issued' ORDER BY b.id""", (cycle,)).fetchall()
        paid = conn.execute(
            f"""SELECT {columns} FROM beneficiaries b JOIN vouchers v ON v.beneficiary_id = b.id
                 WHERE v.cycle = %s AND v.programme = %s AND v.status = 'active' ORDER BY b.id""",
            (cycle, programme_paid)).fetchall()
    chosen = rng.sample(unpaid, k=max(2, int(len(unpaid) * INELIGIBLE_SHARE))) if len(unpaid) >= 2 else []
    changes = [{**row, "status": "suspended" if i % 2 else "deceased"} for i, row in enumerate(chosen)]
    changes += [{**row, "status": "deceased"} for row in rng.sample(paid, k=min(DECEASED_AFTER_PAYMENT, len(paid)))]
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "registry-update.csv"
        with path.open("w", newline="") as handle:
            datagen.write_csv(iter(changes), handle)
        registry_import.import_file(stack.postgres.url, path)
    counts = {"suspended before payment": sum(c["status"] == "suspended" for c in changes[:len(chosen)]),
              "deceased before payment": sum(c["status"] == "deceased" for c in changes[:len(chosen)]),
              "deceased after payment": len(changes) - len(chosen)}
    _say("      registry update mid-cycle: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def _buffr_only_redemptions(stack: LocalStack, seed: int) -> int:
    """Redeem a few still-active vouchers at Buffr only: drift that only reconciliation can find."""
    with psycopg.connect(stack.postgres.url) as conn:
        active = [str(r[0]) for r in conn.execute("SELECT id FROM vouchers WHERE status = 'active' ORDER BY id")]
    chosen = random.Random(seed).sample(active, k=max(1, int(len(active) * BUFFR_ONLY_SHARE))) if active else []
    if chosen:
        stack.buffr.settle_many(chosen, "redeemed", webhook=False)
    return len(chosen)


def _reconcile(stack: LocalStack, max_invocations: int = 200) -> list[str]:
    run_ids: list[str] = []
    for _ in range(max_invocations):
        reply = stack.invoke("ReconcileFunction", {"mode": "full"})
        if reply["run_id"] not in run_ids:
            run_ids.append(reply["run_id"])
        if reply["status"] == "completed":
            return run_ids
    raise RuntimeError(f"reconciliation did not complete in {max_invocations} invocations")


# --- the report: every figure read back from PostgreSQL or the simulator ----------------------

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
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS max
                 FROM (SELECT extract(epoch FROM received_at - occurred_at) * 1000 AS ms
                         FROM webhook_events WHERE occurred_at IS NOT NULL AND outcome = 'applied') l""").fetchone()
        histogram = conn.execute(
            """SELECT width_bucket(extract(epoch FROM received_at - occurred_at) * 1000, 0, 500, 10) AS bucket,
                      count(*)::int AS count
                 FROM webhook_events WHERE occurred_at IS NOT NULL AND outcome = 'applied'
                GROUP BY 1 ORDER BY 1""").fetchall()
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
    requests answered 200 and, of those, answers marked ``Idempotent-Replayed``. The demo
    disburses through the batch route only (no per-request idempotency), so issue and disburse
    have no requests. Route figures cover the demo's whole run (all programmes), as CloudWatch's do."""
    webhooks = buffr["webhooks"]
    return compliance.totals_from({("IdempotentRequests", "webhook"): webhooks["statuses"].get("200", 0),
                                   ("IdempotencyReplays", "webhook"): webhooks["replayed"],
                                   ("IdempotentRequests", "issue"): 0, ("IdempotencyReplays", "issue"): 0,
                                   ("IdempotentRequests", "disburse"): 0, ("IdempotencyReplays", "disburse"): 0})


def compliance_reports(database_url: str, cycle: str, buffr: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each programme's compliance report, read as the read-only ``auditor`` role."""
    from smartpay_tools.cli.compliance import auditor_url

    with psycopg.connect(auditor_url(database_url), autocommit=True) as conn:
        programmes = [r[0] for r in conn.execute(
            "SELECT DISTINCT programme FROM vouchers WHERE cycle = %s ORDER BY 1", (cycle,))]
        return {p: compliance.report(conn, p, cycle, metrics=simulator_metrics(buffr),
                                     buffr_duplicates_refused=buffr.get("duplicates_refused"))
                for p in programmes}


def verify_audit_trail(database_url: str) -> bool:
    """``smartpay audit verify`` over every voucher (as the auditor); prints its lines."""
    import argparse

    from smartpay_tools.cli.compliance import cmd_audit_verify

    args = argparse.Namespace(programme=None, cycle=None, since=None, upto=None, json=False)
    return cmd_audit_verify(args, database_url) == 0


def _totals(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for row in report["statuses"]:
        slot = totals.setdefault(row["status"], {"count": 0, "amount_cents": 0})
        slot["count"] += row["count"]
        slot["amount_cents"] += int(row["amount_cents"])
    return totals


ORDER = ("issued", "held", "pending", "active", "redeemed", "expired", "cancelled", "failed")


def render_text(report: dict[str, Any]) -> str:
    money = recon_report.money
    totals = _totals(report)
    lines = [f"End of cycle {report['cycle']}", "",
             f"{'status':<10} {'vouchers':>9} {'amount':>18}"]
    for status in ORDER:
        t = totals.get(status, {"count": 0, "amount_cents": 0})
        lines.append(f"{status:<10} {t['count']:>9} {money(t['amount_cents']):>18}")
    all_count = sum(t["count"] for t in totals.values())
    all_amount = sum(t["amount_cents"] for t in totals.values())
    lines.append(f"{'total':<10} {all_count:>9} {money(all_amount):>18}")
    lines += ["", "By programme:"]
    for programme, c in report["cycles"].items():
        lines.append(f"  {programme:<12} {c['vouchers']:>6} vouchers  issued {money(c['issued_cents'])}  "
                     f"redeemed {money(c['redeemed_cents'])}  outstanding {money(c['outstanding_cents'])}")
    lines += ["", "Became ineligible mid-cycle (credits at Buffr = paid):"]
    for row in report["ineligible"]:
        lines.append(f"  beneficiary {row['beneficiary']:<10} voucher {row['voucher']:<10} {row['vouchers']:>5} vouchers, "
                     f"paid {row['paid']}" + (f", flagged for review {row['review']}" if row["review"] else ""))
    lines += ["", "Reconciliation:"]
    for run in report["runs"]:
        lines.append(f"  run {run['id']}: checked {run['checked']}, matched {run['matched']}, "
                     f"healed {run['healed']}, flagged {run['flagged']}")
    for d in report["discrepancies"]:
        lines.append(f"  {d['class']:<28} {d['action']:<8} {d['count']:>6}")
    lines.append(f"  vouchers flagged for review: {report['under_review']}")
    w = report["buffr"]["webhooks"]
    lines += ["", "Webhooks:",
              "  outcomes at Ketchup: " + ", ".join(f"{r['outcome']} {r['count']}" for r in report["webhook_outcomes"]),
              f"  sent by Buffr: planned {w['planned']}, attempts {w['attempts']}, duplicated {w['duplicated']}, "
              f"reordered {w['reordered']}, dropped {w['dropped']}, failed {w['failed']}",
              f"  idempotent replays (answers marked Idempotent-Replayed): {w['replayed']}"]
    lat = report["webhook_latency_ms"]
    lines.append(f"  delivery latency (event time -> receipt, applied events): p50 {lat['p50']} ms, "
                 f"p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms over {lat['n']}")
    b = report["buffr"]
    lines += ["", f"Buffr: {b['credits']} credits to {b['vouchers_credited']} vouchers, "
                  f"{b['double_credited']} double-credited; Buffr's statuses: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(b["statuses"].items()))]
    for c in report.get("compliance", {}).values():
        lines += ["", compliance_render.to_text(c).rstrip()]
    return "\n".join(lines)


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
    totals = _totals(report)
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
    for programme, c in report.get("compliance", {}).items():
        failed = [name for name, ok in compliance.checks(c).items() if not ok]
        if failed:
            problems.append(f"compliance {programme} {c['cycle']}: " + ", ".join(failed) + " FAILED")
    return problems


def write_csv(report: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["section", "key", "subkey", "count", "amount_cents"])
        for row in report["statuses"]:
            out.writerow(["vouchers", row["programme"], row["status"], row["count"], row["amount_cents"]])
        for d in report["discrepancies"]:
            out.writerow(["reconciliation", d["class"], d["action"], d["count"], ""])
        for run in report["runs"]:
            for key in ("checked", "matched", "healed", "flagged"):
                out.writerow(["reconciliation_run", run["id"], key, run[key], ""])
        for row in report["webhook_outcomes"]:
            out.writerow(["webhook_outcome", row["outcome"], "", row["count"], ""])
        for key, value in report["buffr"]["webhooks"].items():
            out.writerow(["buffr_webhooks", key, "", value, ""])
        for key, value in report["webhook_latency_ms"].items():
            out.writerow(["webhook_latency_ms", key, "", value, ""])
        out.writerow(["buffr", "credits", "", report["buffr"]["credits"], ""])
        out.writerow(["buffr", "double_credited", "", report["buffr"]["double_credited"], ""])
        out.writerow(["review", "under_review", "", report["under_review"], ""])
        for row in report["ineligible"]:
            out.writerow(["ineligible", row["beneficiary"], row["voucher"], row["vouchers"], ""])
            out.writerow(["ineligible_paid", row["beneficiary"], row["voucher"], row["paid"], ""])
        for programme, c in report.get("compliance", {}).items():
            for row in compliance_render.csv_rows(c):
                count = row.get("count", row.get("value"))
                out.writerow([f"compliance.{row['section']}", programme, row["key"], count,
                              row.get("amount_cents", "")])


def _bars(items: list[tuple[str, float]], *, unit: str = "", width: int = 520, colour: str = "#c0392b") -> str:
    """A horizontal bar chart as inline SVG (no scripts, no external assets)."""
    top = max((v for _, v in items), default=0) or 1
    row, label_w = 26, 130
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row * len(items) + 10}" '
             f'role="img" font-family="sans-serif" font-size="13">']
    for i, (label, value) in enumerate(items):
        y = i * row + 5
        w = (width - label_w - 90) * value / top
        parts.append(f'<text x="0" y="{y + 16}">{html.escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="17" fill="{colour}"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{value:,.0f}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any], steps: list[Step]) -> str:
    money = recon_report.money
    totals = _totals(report)
    status_chart = _bars([(s, totals.get(s, {}).get("count", 0)) for s in ORDER])
    amount_chart = _bars([(s, totals.get(s, {}).get("amount_cents", 0) / 100) for s in ORDER],
                         unit=" NAD", colour="#2c7fb8")
    hist = report["webhook_latency_histogram"]
    latency_chart = _bars([(("≥500 ms" if r["bucket"] > 10 else f"{(r['bucket'] - 1) * 50}-{r['bucket'] * 50} ms"),
                            r["count"]) for r in hist], colour="#27ae60")
    rows = "".join(f"<tr><td>{s}</td><td>{totals.get(s, {}).get('count', 0):,}</td>"
                   f"<td>{money(totals.get(s, {}).get('amount_cents', 0))}</td></tr>" for s in ORDER)
    disc = "".join(f"<tr><td>{html.escape(d['class'])}</td><td>{d['action']}</td><td>{d['count']}</td></tr>"
                   for d in report["discrepancies"]) or "<tr><td colspan=3>none</td></tr>"
    steps_html = "".join(f"<tr><td>{html.escape(s.name)}</td><td>{s.seconds:.1f} s</td>"
                         f"<td>{html.escape(s.note)}</td></tr>" for s in steps)
    text = html.escape(render_text(report))
    compliance_html = "".join(compliance_render.section_html(c) for c in report.get("compliance", {}).values())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SmartPay cycle {report['cycle']}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style>
</head><body>
<h1>Ketchup SmartPay — end of cycle {report['cycle']}</h1>
<p>Every figure is read from PostgreSQL or the Buffr simulator after the run. No PII appears here.</p>
<h2>Vouchers by status</h2>
<table><tr><th>status</th><th>vouchers</th><th>amount</th></tr>{rows}</table>
{status_chart}
<h2>Amounts by status</h2>{amount_chart}
<h2>Reconciliation discrepancies</h2>
<table><tr><th>class</th><th>action</th><th>vouchers</th></tr>{disc}</table>
<h2>Webhook delivery latency (event time → receipt)</h2>{latency_chart}
{compliance_html}
<h2>Full summary</h2><pre>{text}</pre>
<h2>Steps</h2><table><tr><th>step</th><th>time</th><th>what</th></tr>{steps_html}</table>
</body></html>
"""


def _wait() -> None:
    import threading

    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        return


DEFAULT_OUT = PROJECT_ROOT / "reports"
