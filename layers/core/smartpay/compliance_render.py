"""The compliance report as text, CSV and one self-contained HTML page (inline SVG charts).

Pure functions of the report data (:func:`smartpay.compliance.report`): no database, no files,
no external assets — the page opens the same on an air-gapped auditor's laptop.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from smartpay.compliance import STATUSES, checks

CSV_COLUMNS = ("section", "key", "count", "amount_cents", "numerator", "denominator", "value")
STATUS_COLOURS = {"issued": "#95a5a6", "pending": "#f39c12", "active": "#3498db", "held": "#8e44ad",
                  "redeemed": "#27ae60", "expired": "#7f8c8d", "cancelled": "#34495e", "failed": "#c0392b"}


def money(cents: int | None) -> str:
    """N$ with thousands separators, from integer cents (no float anywhere)."""
    cents = int(cents or 0)
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}N$ {whole:,}.{part:02d}"


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f} %"


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def csv_rows(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One flat row per figure (spreadsheets, BI tools)."""
    for key, v in report["vouchers"].items():
        yield {"section": "vouchers", "key": key, "count": v["count"], "amount_cents": v["amount_cents"]}
    a = report["arithmetic"]
    yield {"section": "arithmetic", "key": "issued", "count": a["issued"]["count"],
           "amount_cents": a["issued"]["amount_cents"]}
    yield {"section": "arithmetic", "key": "accounted", "count": a["total"]["count"],
           "amount_cents": a["total"]["amount_cents"]}
    yield {"section": "arithmetic", "key": "check", "value": _verdict(a["ok"])}
    s = report["rates"]["success"]
    yield {"section": "rate", "key": "success", "numerator": s["credited"], "denominator": s["attempted"],
           "value": s["rate"]}
    for route, r in report["rates"]["idempotency"]["routes"].items():
        yield {"section": "rate", "key": f"idempotency_hit_{route}", "numerator": r["replays"],
               "denominator": r["requests"], "value": r["rate"]}
    lat = report["rates"]["webhook_latency"]
    for q in ("p50", "p95", "p99"):
        yield {"section": "webhook_latency_ms", "key": q, "count": lat["deliveries"], "value": lat[f"{q}_ms"]}
    d = report["rates"]["discrepancies"]
    yield {"section": "discrepancies", "key": "total", "count": d["count"], "denominator": d["checked"]}
    for row in d["by_class"]:
        yield {"section": "discrepancies", "key": f"{row['class']}/{row['action']}", "count": row["count"],
               "amount_cents": row["amount_cents"]}
    for key, value in report["eligibility"].items():
        yield {"section": "eligibility", "key": key, "value" if key == "ok" else "count": value}
    for key, value in report["duplicates_prevented"].items():
        yield {"section": "duplicates_prevented", "key": key, "count": value}
    for key, value in report["review"].items():
        yield {"section": "review_open", "key": key, "count": value}
    chain = report["audit_chain"]
    yield {"section": "audit_chain", "key": "head", "count": chain["events"], "value": chain["head"]}
    yield {"section": "audit_chain", "key": "last_event_id", "value": chain["last_event_id"]}
    latest = report.get("anchors", {}).get("latest_verified")
    yield {"section": "audit_chain", "key": "latest_verified_anchor", "value": latest["key"] if latest else None}
    for name, ok in checks(report).items():
        yield {"section": "check", "key": name, "value": _verdict(ok)}


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return out.getvalue()


def to_text(report: dict[str, Any]) -> str:
    title = f"Compliance report: {report['programme']} {report['cycle']}"
    lines = [title, "=" * len(title), f"generated {report['generated_at']}", "", "Vouchers"]
    for key, v in report["vouchers"].items():
        lines.append(f"  {key:<13} {v['count']:>10,}  {money(v['amount_cents']):>22}")
    a = report["arithmetic"]
    lines += ["", f"Arithmetic check ({a['equation']}): {_verdict(a['ok'])}",
              f"  issued   {a['issued']['count']:,} / {money(a['issued']['amount_cents'])}",
              f"  accounted {a['total']['count']:,} / {money(a['total']['amount_cents'])}  ("
              + ", ".join(f"{k} {t['count']:,}" for k, t in a["terms"].items()) + ")"]
    if a["unnamed_statuses"]:
        lines.append(f"  statuses no term names: {', '.join(a['unnamed_statuses'])}")
    r = report["rates"]
    s = r["success"]
    lines += ["", "Guide metrics",
              f"  distribution success rate   {_pct(s['rate'])}  ({s['credited']:,} credited / {s['attempted']:,} sent)",
              f"  discrepancies (open now)    {r['discrepancies']['count']:,} of "
              f"{r['discrepancies']['checked']:,} vouchers checked"]
    for d in r["discrepancies"]["by_class"]:
        lines.append(f"    {d['class']:<24} {d['action']:<12} {d['count']:>8,}  {money(d['amount_cents'])}")
    lines.append(f"  idempotency hit rate        (source: {r['idempotency']['source']})")
    for route, x in r["idempotency"]["routes"].items():
        lines.append(f"    {route:<10} {_pct(x['rate']):>10}  ({_num(x['replays'])} replays / {_num(x['requests'])} requests)")
    lat = r["webhook_latency"]
    lines.append(f"  webhook latency             p50 {_num(lat['p50_ms'])} ms, p95 {_num(lat['p95_ms'])} ms, "
                 f"p99 {_num(lat['p99_ms'])} ms over {lat['deliveries']:,} deliveries")
    e = report["eligibility"]
    dup = report["duplicates_prevented"]
    rev = report["review"]
    lines += ["", "Eligibility",
              f"  held {e['held']:,}, cancelled (ineligible) {e['cancelled_ineligible']:,}, "
              f"sent to an ineligible beneficiary {e['paid_ineligible']:,} (must be 0: {_verdict(e['ok'])})",
              "Duplicates prevented",
              f"  idempotent replays answered {_num(dup['idempotency_replays'])}, webhook duplicates logged "
              f"{dup['webhook_duplicates_logged']:,}, re-sends Buffr refused as duplicates "
              f"{_num(dup['buffr_duplicates_refused'])}",
              "Open review flags",
              f"  vouchers flagged {rev['vouchers_flagged']:,}, latest reconciliation flagged "
              f"{rev['reconciliation_flagged']:,}"]
    c = report["audit_chain"]
    lines += ["", f"Audit chain: {_verdict(c['ok'])}  {c['events']:,} rows over {c['vouchers']:,} vouchers",
              f"  cycle head {c['head'] or '-'}  (up to voucher_events row {c['last_event_id']})"]
    if c["broken"]:
        b = c["broken"]
        lines.append(f"  first broken: row {b['event_id']} of voucher {b['voucher_id']}: {b['reason']}")
    lines.append(anchor_line(report))
    lines += ["", "Checks: " + ", ".join(f"{k} {_verdict(v)}" for k, v in checks(report).items())]
    return "\n".join(lines) + "\n"


# --- HTML -----------------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape(str(value))


def _bars(items: list[tuple[str, float]], *, colour: str = "#2c3e50", bar_w: int = 300, unit: str = "") -> str:
    """A horizontal bar chart as inline SVG, sized to its longest label and value."""
    if not items:
        return "<p>none</p>"
    top = max(v for _, v in items) or 1
    values = [f"{value:,}{unit}" for _, value in items]
    row, label_w = 22, 7 * max(len(label) for label, _ in items) + 12
    width = label_w + bar_w + 7 * max(len(v) for v in values) + 14
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row * len(items) + 4}" '
             f'role="img" font-family="sans-serif">']
    for i, ((label, value), text) in enumerate(zip(items, values, strict=True)):
        w = int(bar_w * value / top)
        y = i * row + 2
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{_esc(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="15" fill="{colour}"/>'
                     f'<text x="{label_w + w + 6}" y="{y + 15}" font-size="12">{_esc(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _timeline_svg(timeline: dict[str, Any], width: int = 640, height: int = 260) -> str:
    """Vouchers by status over time: one polyline per status, a time axis in UTC clock time."""
    points = timeline["points"]
    if not points:
        return "<p>no audit rows</p>"
    top = max(max(p[s] for s in STATUSES) for p in points) or 1
    n = max(len(points) - 1, 1)
    left, bottom = 56, height - 40
    times = [datetime.fromisoformat(p["at"]) for p in points]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 150}" height="{height}" role="img" '
             f'font-family="sans-serif">',
             f'<line x1="{left}" y1="{bottom}" x2="{left + width}" y2="{bottom}" stroke="#999"/>',
             f'<line x1="{left}" y1="10" x2="{left}" y2="{bottom}" stroke="#999"/>',
             f'<text x="{left - 6}" y="16" font-size="11" text-anchor="end">{top:,}</text>'
             f'<text x="{left - 6}" y="{bottom}" font-size="11" text-anchor="end">0</text>']
    for k, status in enumerate(STATUSES):
        coords = " ".join(f"{left + width * i / n:.1f},{bottom - (bottom - 10) * p[status] / top:.1f}"
                          for i, p in enumerate(points))
        parts.append(f'<polyline fill="none" stroke="{STATUS_COLOURS[status]}" stroke-width="2" points="{coords}"/>'
                     f'<text x="{left + width + 8}" y="{20 + 16 * k}" font-size="12" '
                     f'fill="{STATUS_COLOURS[status]}">{status} {points[-1][status]:,}</text>')
    ticks = sorted({round((len(points) - 1) * q) for q in (0, 0.25, 0.5, 0.75, 1)})
    for i in ticks:
        x = left + width * i / n
        anchor = "start" if i == 0 else "end" if i == n else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#999"/>'
                     f'<text x="{x:.1f}" y="{bottom + 16}" font-size="11" text-anchor="{anchor}">'
                     f'{times[i]:%H:%M:%S}</text>')
    parts.append(f'<text x="{left + width / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
                 f'time (UTC, {times[0]:%Y-%m-%d}), one point per {timeline["step_seconds"]:,} s</text></svg>')
    return "".join(parts)


def anchor_line(report: dict[str, Any]) -> str:
    """The latest anchor (S3 Object Lock) the database still agrees with, or why there is none."""
    a = report.get("anchors") or {"configured": False}
    if not a["configured"]:
        return "  anchors: no anchor bucket configured (audit verify --anchors)"
    latest = a["latest_verified"]
    newer = f"; {a['newer_disagreeing']} newer DISAGREE" if a["newer_disagreeing"] else ""
    if latest is None:
        return f"  anchors: none of {a['anchors']} verifies{newer}"
    return (f"  latest verified anchor {latest['key']} (up to row {latest['upto_event_id']}, "
            f"written {latest['written_at']}){newer}")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def section_html(report: dict[str, Any]) -> str:
    """The compliance section (the demo's page embeds it; :func:`to_html` wraps it in a page)."""
    a, r, c = report["arithmetic"], report["rates"], report["audit_chain"]
    verdicts = "".join(f'<li class="{"ok" if ok else "bad"}">{_esc(name)}: {_verdict(ok)}</li>'
                       for name, ok in checks(report).items())
    vouchers = _table(("", "vouchers", "amount"), [(k, f"{v['count']:,}", money(v["amount_cents"]))
                                                   for k, v in report["vouchers"].items()])
    s = r["success"]
    rates = _table(("metric", "value", "from"), [
        ("distribution success rate", _pct(s["rate"]), f"{s['credited']:,} credited / {s['attempted']:,} sent"),
        ("reconciliation discrepancies (open)", f"{r['discrepancies']['count']:,}",
         f"of {r['discrepancies']['checked']:,} vouchers checked"),
        *[(f"idempotency hit rate: {route}", _pct(x["rate"]), f"{_num(x['replays'])} / {_num(x['requests'])}")
          for route, x in r["idempotency"]["routes"].items()],
        ("webhook latency p50 / p95 / p99",
         f"{_num(r['webhook_latency']['p50_ms'])} / {_num(r['webhook_latency']['p95_ms'])} / "
         f"{_num(r['webhook_latency']['p99_ms'])} ms", f"{r['webhook_latency']['deliveries']:,} deliveries")])
    e, dup, rev = report["eligibility"], report["duplicates_prevented"], report["review"]
    exceptions = _table(("", "count"), [
        ("held", e["held"]), ("cancelled (ineligible)", e["cancelled_ineligible"]),
        ("sent to an ineligible beneficiary (must be 0)", e["paid_ineligible"]),
        ("idempotent replays answered", _num(dup["idempotency_replays"])),
        ("webhook duplicates logged", dup["webhook_duplicates_logged"]),
        ("re-sends Buffr refused as duplicates", _num(dup["buffr_duplicates_refused"])),
        ("vouchers flagged for review", rev["vouchers_flagged"]),
        ("latest reconciliation flagged", rev["reconciliation_flagged"])])
    latency = _bars([(b["bucket"], b["count"]) for b in r["webhook_latency"]["histogram"]], colour="#2980b9")
    classes = _bars([(f"{d['class']} / {d['action']}", d["count"]) for d in r["discrepancies"]["by_class"]],
                    colour="#c0392b")
    return (f'<section id="compliance"><h2>Compliance: {_esc(report["programme"])} {_esc(report["cycle"])}</h2>'
            f"<ul>{verdicts}</ul>"
            f"<p>Arithmetic: {_esc(a['equation'])}: issued {a['issued']['count']:,} "
            f"({money(a['issued']['amount_cents'])}) against {a['total']['count']:,} "
            f"({money(a['total']['amount_cents'])}): <b>{_verdict(a['ok'])}</b></p>"
            f"<h3>Vouchers</h3>{vouchers}<h3>Guide metrics</h3>{rates}"
            f"<h3>Vouchers by status over time</h3>{_timeline_svg(report['timeline'])}"
            f"<h3>Webhook latency (event time to receipt)</h3>{latency}"
            f"<h3>Discrepancies by class and action (open now)</h3>{classes}"
            f"<h3>Exceptions</h3>{exceptions}"
            f"<h3>Audit chain</h3><p>{_verdict(c['ok'])}: {c['events']:,} rows over {c['vouchers']:,} vouchers; "
            f"cycle head <code>{_esc(c['head'] or '-')}</code> up to row {_esc(c['last_event_id'])}</p>"
            f"<p>{_esc(anchor_line(report).strip())}</p></section>")


STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse;"
         "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child"
         "{text-align:left}.ok{color:#27ae60}.bad{color:#c0392b;font-weight:bold}code{font-size:12px}")


def to_html(report: dict[str, Any]) -> str:
    title = f"Compliance report {report['programme']} {report['cycle']}"
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{_esc(title)}</h1>"
            f"<p>generated {_esc(report['generated_at'])}</p>{section_html(report)}</body></html>\n")
