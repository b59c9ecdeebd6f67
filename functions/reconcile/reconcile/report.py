"""Reconciliation reports, per run and per programme cycle: the numbers, a CSV and a text summary.

Shared by the reconcile function (``{"report": …}`` events) and the operator CLI
(``smartpay report``). Reads only what the ``smartpay_reconcile`` and ``auditor`` roles may read
(no PII). Amounts are integer cents throughout; only the text rendering formats them.

* ``run_report(conn, run_id)``: the run (window, shard, counts), discrepancies by class and
  action, and per programme cycle: checked, matched, healed, flagged, and the amounts of the
  checked vouchers by their status now (issued / redeemed / outstanding).
* ``cycle_report(conn, programme, cycle)``: every voucher of the cycle by status with amounts
  (issued, redeemed, outstanding, expired, cancelled, failed), the *current* reconciliation
  state: each voucher's latest record from a real (not dry) run, by class and action, and the
  cycle's runs (server-side disbursement), each with what it sent against what was confirmed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import psycopg

OPEN = ("issued", "pending", "active")
CSV_COLUMNS = ("report", "subject", "section", "programme", "cycle", "key", "action", "count", "amount_cents",
               "buffr_amount_cents")
RECORD_COLUMNS = ("voucher_id", "programme", "cycle", "ketchup_status", "buffr_status", "ketchup_amount_cents",
                  "buffr_amount_cents", "match", "discrepancy", "action", "detail", "checked_at")


def _amounts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Issued (everything), redeemed, outstanding (still open) and the rest, from rows by status."""
    by = {r["status"]: int(r["amount_cents"]) for r in rows}
    return {"issued_cents": sum(by.values()), "redeemed_cents": by.get("redeemed", 0),
            "outstanding_cents": sum(by.get(s, 0) for s in OPEN), "expired_cents": by.get("expired", 0),
            "cancelled_cents": by.get("cancelled", 0), "failed_cents": by.get("failed", 0)}


def run_report(conn: psycopg.Connection[Any], run_id: str) -> dict[str, Any]:
    run = conn.execute(
        """SELECT id::text AS id, mode, window_start, window_end, shard, shards, dry_run, status, checked, matched,
                  healed, flagged, unavailable, redisbursed, invocations, duration_ms, started_at, finished_at
             FROM reconciliation_runs WHERE id = %s""", (run_id,)).fetchone()
    if run is None:
        raise LookupError(f"no reconciliation run {run_id}")
    classes = conn.execute(
        """SELECT coalesce(discrepancy, 'match') AS class, action, count(*)::int AS count,
                  coalesce(sum(ketchup_amount_cents), 0)::bigint AS amount_cents,
                  coalesce(sum(buffr_amount_cents), 0)::bigint AS buffr_amount_cents
             FROM reconciliation_records WHERE run_id = %s GROUP BY 1, 2 ORDER BY 1, 2""", (run_id,)).fetchall()
    cycles = conn.execute(
        """SELECT v.programme, v.cycle, count(*)::int AS checked,
                  (count(*) FILTER (WHERE r.match))::int AS matched,
                  (count(*) FILTER (WHERE r.action = 'healed'))::int AS healed,
                  (count(*) FILTER (WHERE r.action = 'flagged'))::int AS flagged,
                  (count(*) FILTER (WHERE r.action = 'redisbursed'))::int AS redisbursed,
                  (count(*) FILTER (WHERE r.discrepancy = 'unavailable'))::int AS unavailable
             FROM reconciliation_records r JOIN vouchers v ON v.id = r.voucher_id
            WHERE r.run_id = %s GROUP BY 1, 2 ORDER BY 1, 2""", (run_id,)).fetchall()
    statuses = conn.execute(
        """SELECT v.programme, v.cycle, v.status, count(*)::int AS count, sum(v.amount_cents)::bigint AS amount_cents
             FROM reconciliation_records r JOIN vouchers v ON v.id = r.voucher_id
            WHERE r.run_id = %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", (run_id,)).fetchall()
    for c in cycles:
        rows = [s for s in statuses if (s["programme"], s["cycle"]) == (c["programme"], c["cycle"])]
        c["statuses"] = {s["status"]: {"count": s["count"], "amount_cents": int(s["amount_cents"])} for s in rows}
        c.update(_amounts(rows))
    return {"report": "run", "run": _jsonable(run), "discrepancies": classes, "cycles": cycles}


def cycle_report(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, Any]:
    statuses = conn.execute(
        """SELECT status, count(*)::int AS count, sum(amount_cents)::bigint AS amount_cents,
                  (count(*) FILTER (WHERE review_reason IS NOT NULL))::int AS under_review
             FROM vouchers WHERE programme = %s AND cycle = %s GROUP BY 1 ORDER BY 1""",
        (programme, cycle)).fetchall()
    from smartpay import compliance  # only reports need it (keeps the scheduled run's cold start lean)

    latest = compliance.latest_reconciliation(conn, programme, cycle)
    runs = compliance.reconciliation_coverage(conn, programme, cycle)
    return {"report": "cycle", "programme": programme, "cycle": cycle,
            "vouchers": sum(s["count"] for s in statuses), "cycle_runs": cycle_runs(conn, programme, cycle),
            "statuses": {s["status"]: {"count": s["count"], "amount_cents": int(s["amount_cents"]),
                                       "under_review": s["under_review"]} for s in statuses},
            **_amounts([{"status": s["status"], "amount_cents": s["amount_cents"]} for s in statuses]),
            "reconciliation": _jsonable(runs), "discrepancies": latest}


def cycle_runs(conn: psycopg.Connection[Any], programme: str, cycle: str) -> list[dict[str, Any]]:
    """The cycle's runs with what each sent against what was confirmed: accepted by Buffr
    (a delivery id recorded) and, per each voucher's latest reconciliation check, matched at Buffr."""
    rows = conn.execute(
        """SELECT r.id::text AS run_id, r.status, r.maker_principal AS maker, r.checker_principal AS checker,
                  r.voucher_count, r.total_amount_cents, r.prepared_at, r.approved_at, r.finished_at,
                  count(i.voucher_id)::int AS planned,
                  (count(*) FILTER (WHERE v.status IN ('pending', 'active', 'redeemed', 'failed')
                                       OR v.buffr_delivery_id IS NOT NULL))::int AS sent,
                  (count(*) FILTER (WHERE v.buffr_delivery_id IS NOT NULL))::int AS accepted,
                  (count(*) FILTER (WHERE v.status = 'pending'))::int AS pending,
                  (count(*) FILTER (WHERE v.status = 'failed'))::int AS failed,
                  (count(*) FILTER (WHERE rec.match))::int AS confirmed,
                  (count(*) FILTER (WHERE rec.match IS FALSE))::int AS discrepancies
             FROM cycle_runs r
             LEFT JOIN cycle_run_items i ON i.run_id = r.id
             LEFT JOIN vouchers v ON v.id = i.voucher_id
             LEFT JOIN LATERAL (
                 SELECT rr.match FROM reconciliation_records rr
                   JOIN reconciliation_runs run ON run.id = rr.run_id AND NOT run.dry_run
                  WHERE rr.voucher_id = v.id ORDER BY rr.checked_at DESC, rr.id DESC LIMIT 1) rec ON true
            WHERE r.programme = %s AND r.cycle = %s
            GROUP BY r.id ORDER BY r.prepared_at""", (programme, cycle)).fetchall()
    return [_jsonable(r) for r in rows]


def records(conn: psycopg.Connection[Any], run_id: str, *, discrepancies_only: bool = True) -> Iterator[dict[str, Any]]:
    """A run's per-voucher records for export, streamed (server-side cursor; never all in memory)."""
    where = "AND (NOT r.match OR r.action <> 'none')" if discrepancies_only else ""
    with conn.transaction(), conn.cursor(name="recon_records") as cur:
        cur.itersize = 2000
        cur.execute(
            f"""SELECT r.voucher_id::text AS voucher_id, v.programme, v.cycle, r.ketchup_status, r.buffr_status,
                       r.ketchup_amount_cents, r.buffr_amount_cents, r.match, r.discrepancy, r.action, r.detail,
                       r.checked_at
                  FROM reconciliation_records r JOIN vouchers v ON v.id = r.voucher_id
                 WHERE r.run_id = %s {where} ORDER BY r.voucher_id""", (run_id,))
        yield from cur


def _jsonable(row: dict[str, Any] | None) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in (row or {}).items()}


# --- rendering ------------------------------------------------------------------------------------

def money(cents: int | None) -> str:
    """N$ with thousands separators, from integer cents (no float anywhere)."""
    cents = int(cents or 0)
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}N$ {whole:,}.{part:02d}"


def csv_rows(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One flat row per figure: easy to load into a spreadsheet or a BI tool."""
    kind = report["report"]
    subject = report["run"]["id"] if kind == "run" else f"{report['programme']}/{report['cycle']}"
    base = {"report": kind, "subject": subject}
    for d in report["discrepancies"]:
        yield {**base, "section": "discrepancy", "key": d["class"], "action": d["action"], "count": d["count"],
               "amount_cents": d["amount_cents"], "buffr_amount_cents": d["buffr_amount_cents"]}
    cycles = report["cycles"] if kind == "run" else [report]
    for run in report.get("cycle_runs", []):
        for key in ("planned", "sent", "accepted", "confirmed", "pending", "failed", "discrepancies"):
            yield {**base, "programme": report["programme"], "cycle": report["cycle"], "section": "cycle_run",
                   "key": f"{run['run_id']}:{key}", "action": run["status"], "count": run[key]}
    for c in cycles:
        where = {"programme": c["programme"], "cycle": c["cycle"]}
        for status, s in c["statuses"].items():
            yield {**base, **where, "section": "status", "key": status, "count": s["count"],
                   "amount_cents": s["amount_cents"]}
        for key in ("issued_cents", "redeemed_cents", "outstanding_cents"):
            yield {**base, **where, "section": "amount", "key": key.removesuffix("_cents"), "amount_cents": c[key]}
        if kind == "run":
            for key in ("checked", "matched", "healed", "flagged", "redisbursed", "unavailable"):
                yield {**base, **where, "section": "checked", "key": key, "count": c[key]}


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(report):
        writer.writerow(row)
    return out.getvalue()


def write_records_csv(rows: Iterator[dict[str, Any]], out: io.TextIOBase | Any) -> int:
    writer = csv.DictWriter(out, fieldnames=RECORD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()})
        n += 1
    return n


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return ["  " + fmt.format(*header), "  " + fmt.format(*("-" * w for w in widths))] + [
        "  " + fmt.format(*(str(x) for x in row)) for row in rows]


def _discrepancy_lines(report: dict[str, Any]) -> list[str]:
    rows = [(d["class"], d["action"], f"{d['count']:,}", money(d["amount_cents"]),
             money(d["buffr_amount_cents"]) if d["class"] != "match" else "") for d in report["discrepancies"]]
    return _table(rows, ("class", "action", "vouchers", "Ketchup amount", "Buffr amount")) if rows else ["  none"]


def _amount_lines(c: dict[str, Any]) -> list[str]:
    return [f"  issued {money(c['issued_cents'])}   redeemed {money(c['redeemed_cents'])}   "
            f"outstanding {money(c['outstanding_cents'])}   expired {money(c['expired_cents'])}   "
            f"cancelled {money(c['cancelled_cents'])}   failed {money(c['failed_cents'])}"]


def to_text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if report["report"] == "run":
        r = report["run"]
        title = f"Reconciliation run {r['id']}" + ("  [DRY RUN: nothing was changed; actions are planned]"
                                                   if r["dry_run"] else "")
        lines += [title, "=" * len(title),
                  f"mode {r['mode']}, shard {r['shard'] + 1} of {r['shards']}, status {r['status']}",
                  f"window from {r['window_start'] or '-'} to {r['window_end']}",
                  f"started {r['started_at']}, finished {r['finished_at'] or '-'}, {r['invocations']} invocation(s), "
                  f"{r['duration_ms'] / 1000:.1f} s working",
                  "",
                  f"checked {r['checked']:,}: matched {r['matched']:,}, healed {r['healed']:,}, "
                  f"flagged {r['flagged']:,}, re-sent {r['redisbursed']:,}, Buffr unavailable {r['unavailable']:,}",
                  "", "Discrepancies by class"]
        lines += _discrepancy_lines(report)
        for c in report["cycles"]:
            lines += ["", f"{c['programme']} {c['cycle']}: checked {c['checked']:,}, matched {c['matched']:,}, "
                          f"healed {c['healed']:,}, flagged {c['flagged']:,}, re-sent {c['redisbursed']:,}, "
                          f"unavailable {c['unavailable']:,}",
                      "  status now: " + ", ".join(f"{s} {v['count']:,} ({money(v['amount_cents'])})"
                                                   for s, v in c["statuses"].items())]
            lines += _amount_lines(c)
    else:
        title = f"Programme cycle {report['programme']} {report['cycle']}"
        rec = report["reconciliation"]
        lines += [title, "=" * len(title), f"{report['vouchers']:,} vouchers"]
        rows = [(s, f"{v['count']:,}", money(v["amount_cents"]), f"{v['under_review']:,}")
                for s, v in report["statuses"].items()]
        lines += _table(rows, ("status", "vouchers", "amount", "under review")) if rows else ["  none"]
        lines += _amount_lines(report)
        lines += ["", f"Reconciliation: {rec.get('vouchers_checked') or 0:,} vouchers checked by "
                      f"{rec.get('runs') or 0} run(s), last at {rec.get('last_checked_at') or '-'}",
                  "Current state (each voucher's latest check)"]
        lines += _discrepancy_lines(report)
        runs = report.get("cycle_runs") or []
        lines += ["", "Cycle runs (sent by the server-side run vs confirmed: accepted by Buffr, matched by "
                      "reconciliation)"]
        rows = [(r["run_id"][:8], r["status"], f"{r['maker']}/{r['checker'] or '-'}", f"{r['planned']:,}",
                 f"{r['sent']:,}", f"{r['accepted']:,}", f"{r['confirmed']:,}", f"{r['pending']:,}",
                 f"{r['failed']:,}") for r in runs]
        lines += _table(rows, ("run", "status", "maker/checker", "planned", "sent", "accepted", "confirmed",
                               "pending", "failed")) if rows else ["  none"]
    return "\n".join(lines) + "\n"
