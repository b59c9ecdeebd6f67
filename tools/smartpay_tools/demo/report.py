"""The demo's end-of-cycle report from its figures: text, CSV and one self-contained HTML page."""

from __future__ import annotations

import csv
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smartpay import compliance_render
from smartpay_tools.demo.figures import status_totals as _totals
from smartpay_tools.local.function_code import import_module

recon_report = import_module("reconcile", "reconcile.report")  # the reconcile function's own module

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
    lines.append("    (local stack: mostly the simulator's send queue and the local webhook workers, "
                 "not the receipt's own time)")
    b = report["buffr"]
    lines += ["", f"Buffr: {b['credits']} credits to {b['vouchers_credited']} vouchers, "
                  f"{b['double_credited']} double-credited; Buffr's statuses: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(b["statuses"].items()))]
    for c in report.get("compliance", {}).values():
        lines += ["", compliance_render.to_text(c).rstrip()]
    return "\n".join(lines)


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


def _bars(items: list[tuple[str, float]], *, unit: str = "", bar_w: int = 360, colour: str = "#c0392b") -> str:
    """A horizontal bar chart as inline SVG (no scripts, no external assets), sized to its labels."""
    top = max((v for _, v in items), default=0) or 1
    values = [f"{value:,.0f}{unit}" for _, value in items]
    row, label_w = 26, max(130, 8 * max((len(label) for label, _ in items), default=0) + 12)
    width = label_w + bar_w + 8 * max((len(v) for v in values), default=0) + 16
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row * len(items) + 10}" '
             f'role="img" font-family="sans-serif" font-size="13">']
    for i, ((label, value), text) in enumerate(zip(items, values, strict=True)):
        y = i * row + 5
        w = bar_w * value / top
        parts.append(f'<text x="0" y="{y + 16}">{html.escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="17" fill="{colour}"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)


#: Figures the local stack shapes, said where the report shows them.
LOCAL_LATENCY_NOTE = ("On the local stack this is mostly the time a delivery waits in the Buffr simulator's send "
                      "queue and for the local runner's webhook workers while a whole cycle is credited at once, "
                      "not the receipt's own time (docs/performance.md, webhook_receipt).")


def render_html(report: dict[str, Any], steps: Iterable[Any]) -> str:
    money = recon_report.money
    totals = _totals(report)
    status_chart = _bars([(s, totals.get(s, {}).get("count", 0)) for s in ORDER])
    amount_chart = _bars([(s, totals.get(s, {}).get("amount_cents", 0) / 100) for s in ORDER],
                         unit=" NAD", colour="#2c7fb8")
    latency_chart = _bars([(r["bucket"], r["count"]) for r in report["webhook_latency_histogram"]],
                          colour="#27ae60")
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
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}pre{{background:#f6f6f6;padding:1em}}
.note{{color:#555;font-size:90%}}svg{{max-width:100%;overflow:visible}}</style>
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
<p class="note">{html.escape(LOCAL_LATENCY_NOTE)} The compliance sections' webhook latency below is the same
measure.</p>
{compliance_html}
<h2>Full summary</h2><pre>{text}</pre>
<h2>Steps</h2><table><tr><th>step</th><th>time</th><th>what</th></tr>{steps_html}</table>
</body></html>
"""
