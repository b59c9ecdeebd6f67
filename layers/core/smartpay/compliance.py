"""The compliance report of one programme cycle: counts, the arithmetic check, the guide's rates,
eligibility exceptions, duplicates prevented, open review flags and the audit chain head.

Shared by the reconcile function (``{"report": {"compliance": true, …}}``) and the operator CLI
(``smartpay report --compliance``). Reads only what both the read-only ``auditor`` role and the
``smartpay_reconcile`` role may read (``vouchers``, ``voucher_events``, the reconciliation tables
and the PII-free views ``beneficiary_eligibility`` and ``webhook_receipts``); nothing here writes. Amounts are integer cents; rates are ratios (0..1) with
their numerator and denominator beside them, so a reader can check every one.

The idempotency hit rate is the one figure PostgreSQL cannot know (a replay is answered from
DynamoDB before any SQL runs): it is read from the functions' metrics — CloudWatch for a
deployed stack, or the EMF lines the functions printed (local stack, tests) — via a
:class:`MetricTotals` source. Without one the rate is reported as unavailable, never guessed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from smartpay import anchors as anchor_heads
from smartpay import audit_chain

#: Current statuses, in lifecycle order; each is counted by name, so a status no voucher is in shows 0.
STATUSES = ("issued", "pending", "active", "held", "redeemed", "expired", "cancelled", "failed")
OUTSTANDING = ("issued", "pending", "active")
#: The terms of the arithmetic check: issued = redeemed + outstanding + expired + cancelled + failed + held.
SETTLED_TERMS = ("redeemed", "expired", "cancelled", "failed", "held")
#: Routes whose replays the idempotency layer answers (metric dimension ``route``).
IDEMPOTENT_ROUTES = ("issue", "webhook")
#: The function (Powertools ``service``) that answers each route.
ROUTE_SERVICES = {"issue": "disburse", "webhook": "webhook"}
#: Latency bucket bounds on a log scale: 1-2-5 steps from 1 ms to 50 min.
LATENCY_STEPS_MS = tuple(m * 10**e for e in range(7) for m in (1, 2, 5))


def latency_bounds(fastest_ms: float | None, slowest_ms: float | None) -> list[float]:
    """Bucket bounds that spread the data between the fastest and the slowest value: the 1-2-5
    log steps when the data spans six or more of them, else even 1-2-5-sized steps, about eight
    (a fixed scale puts a slow local run in one bar)."""
    if fastest_ms is None or slowest_ms is None:
        return [1]
    low, high = max(float(fastest_ms), 0.0), max(float(slowest_ms), 0.0)
    log = [float(b) for b in LATENCY_STEPS_MS if low < b <= high]
    if len(log) >= 6:
        return log
    wanted = (high - low) / 8
    step = min((m * 10.0**e for e in range(-1, 8) for m in (1, 2, 5) if m * 10.0**e >= wanted), default=1.0)
    bounds, bound = [], (low // step + 1) * step
    while bound <= high:
        bounds.append(round(bound, 6))
        bound += step
    return bounds or [high or 1]


def duration_label(ms: float) -> str:
    """1 ms, 500 ms, 2 s, 150 s, 20 min: the unit a reader reads the value in, three digits at most."""
    if ms < 1000:
        return f"{ms:.3g} ms"
    return f"{ms / 1000:.3g} s" if ms < 600_000 else f"{ms / 60_000:.3g} min"


def latency_labels(bounds: list[float]) -> list[str]:
    """``width_bucket``'s buckets over ``bounds``: under the first, between each pair, from the last."""
    inner = [f"{duration_label(a)} to {duration_label(b)}" for a, b in itertools.pairwise(bounds)]
    return [f"< {duration_label(bounds[0])}", *inner, f"≥ {duration_label(bounds[-1])}"]

#: ``(metric name, route, start, end) -> sum`` or ``None`` when the source has no figure.
MetricTotals = Callable[[str, str, datetime, datetime], float | None]


def _counts(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, dict[str, int]]:
    rows = conn.execute(
        """SELECT status, count(*)::bigint AS count, coalesce(sum(amount_cents), 0)::bigint AS amount_cents,
                  (count(*) FILTER (WHERE review_reason IS NOT NULL))::bigint AS under_review
             FROM vouchers WHERE programme = %s AND cycle = %s GROUP BY status""", (programme, cycle)).fetchall()
    by = {s: {"count": 0, "amount_cents": 0, "under_review": 0} for s in STATUSES}
    for r in rows:
        by[r["status"]] = {"count": int(r["count"]), "amount_cents": int(r["amount_cents"]),
                           "under_review": int(r["under_review"])}
    return by


def _reached(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, dict[str, int]]:
    """From the audit trail: vouchers issued (their creation row), sent (ever pending) and credited
    (ever active or redeemed: Buffr put them in a wallet) — whatever their status is now."""
    row = conn.execute(
        """WITH per AS (
               SELECT v.id, v.amount_cents,
                      bool_or(e.from_status IS NULL AND e.to_status = 'issued') AS issued,
                      bool_or(e.to_status = 'pending') AS sent,
                      bool_or(e.to_status IN ('active', 'redeemed')) AS credited
                 FROM vouchers v JOIN voucher_events e ON e.voucher_id = v.id
                WHERE v.programme = %s AND v.cycle = %s GROUP BY v.id, v.amount_cents)
           SELECT count(*) FILTER (WHERE issued) AS issued,
                  coalesce(sum(amount_cents) FILTER (WHERE issued), 0)::bigint AS issued_cents,
                  count(*) FILTER (WHERE sent) AS sent,
                  coalesce(sum(amount_cents) FILTER (WHERE sent), 0)::bigint AS sent_cents,
                  count(*) FILTER (WHERE sent AND credited) AS credited,
                  coalesce(sum(amount_cents) FILTER (WHERE sent AND credited), 0)::bigint AS credited_cents
             FROM per""", (programme, cycle)).fetchone()
    return {k: {"count": int(row[k]), "amount_cents": int(row[f"{k}_cents"])} for k in ("issued", "sent", "credited")}


def arithmetic(issued: dict[str, int], statuses: dict[str, dict[str, int]]) -> dict[str, Any]:
    """issued (by the audit trail's creation rows) = redeemed + outstanding + expired + cancelled +
    failed + held (by the vouchers' status now), in vouchers and in cents. A voucher without its
    creation row, or in a status none of the terms names, makes it fail."""
    terms = {"outstanding": {"count": sum(statuses[s]["count"] for s in OUTSTANDING),
                             "amount_cents": sum(statuses[s]["amount_cents"] for s in OUTSTANDING)}}
    terms |= {s: {"count": statuses[s]["count"], "amount_cents": statuses[s]["amount_cents"]} for s in SETTLED_TERMS}
    total = {"count": sum(t["count"] for t in terms.values()),
             "amount_cents": sum(t["amount_cents"] for t in terms.values())}
    unnamed = sorted(s for s, v in statuses.items() if s not in STATUSES and v["count"])
    ok = total == {"count": issued["count"], "amount_cents": issued["amount_cents"]} and not unnamed
    return {"ok": ok, "issued": dict(issued), "terms": terms, "total": total, "unnamed_statuses": unnamed,
            "equation": "issued = redeemed + outstanding + expired + cancelled + failed + held"}


def _rate(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def _window(conn: psycopg.Connection[Any], programme: str, cycle: str) -> tuple[datetime | None, datetime | None]:
    row = conn.execute(
        """SELECT min(e.at), max(e.at) FROM voucher_events e JOIN vouchers v ON v.id = e.voucher_id
            WHERE v.programme = %s AND v.cycle = %s""", (programme, cycle)).fetchone()
    return row["min"], row["max"]


def _latency(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, Any]:
    """Webhook delivery latency, Buffr's event time → our receipt, over the cycle's logged deliveries."""
    row = conn.execute(
        """SELECT count(*) AS count, min(ms) AS fastest, max(ms) AS slowest,
                  percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms) AS pct
             FROM (SELECT greatest(extract(epoch FROM w.received_at - w.occurred_at) * 1000, 0)::float8 AS ms
                     FROM webhook_receipts w JOIN vouchers v ON v.id = w.voucher_id
                    WHERE v.programme = %s AND v.cycle = %s AND w.occurred_at IS NOT NULL
                      AND w.outcome <> 'rejected') d""", (programme, cycle)).fetchone()
    buckets = conn.execute(
        """SELECT width_bucket(greatest(extract(epoch FROM w.received_at - w.occurred_at) * 1000, 0)::float8,
                              %s::float8[]) AS bucket, count(*)::int AS count
             FROM webhook_receipts w JOIN vouchers v ON v.id = w.voucher_id
            WHERE v.programme = %s AND v.cycle = %s AND w.occurred_at IS NOT NULL AND w.outcome <> 'rejected'
            GROUP BY 1 ORDER BY 1""", (bounds := latency_bounds(row["fastest"], row["slowest"]), programme,
                                       cycle)).fetchall()
    labels = latency_labels(bounds)
    counts = dict.fromkeys(labels, 0)
    for b in buckets:
        counts[labels[b["bucket"]]] += b["count"]
    p50, p95, p99 = row["pct"] or (None, None, None)
    return {"deliveries": int(row["count"]), "p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99),
            "histogram": [{"bucket": k, "count": v} for k, v in counts.items()]}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _idempotency(totals: MetricTotals | None, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    routes: dict[str, Any] = {}
    for route in IDEMPOTENT_ROUTES:
        if totals is None or start is None or end is None:
            routes[route] = {"requests": None, "replays": None, "rate": None}
            continue
        requests = totals("IdempotentRequests", route, start, end)
        replays = totals("IdempotencyReplays", route, start, end)
        routes[route] = {"requests": None if requests is None else int(requests),
                         "replays": None if replays is None else int(replays),
                         "rate": _rate(replays or 0, requests) if requests else None}
    return {"source": "metrics" if totals is not None else "unavailable", "routes": routes}


def _eligibility(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, Any]:
    """Held or cancelled because the beneficiary is not eligible, and any voucher sent to Buffr
    for a beneficiary who was not eligible when it was sent (must be 0).

    The registry keeps only the current status and when it last changed (``updated_at``), so a
    send counts as ineligible when the beneficiary is not enrolled in the voucher's programme, or
    is inactive now and already was (last change before the send)."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE v.status = 'held') AS held,
                  count(*) FILTER (WHERE v.status = 'cancelled'
                                   AND (b.status <> 'active' OR b.programme <> v.programme)) AS cancelled_ineligible,
                  count(*) FILTER (WHERE sent.at IS NOT NULL
                                   AND (b.programme <> v.programme
                                        OR (b.status <> 'active' AND b.updated_at <= sent.at))) AS paid_ineligible
             FROM vouchers v
             JOIN beneficiary_eligibility b ON b.id = v.beneficiary_id
             LEFT JOIN LATERAL (SELECT min(e.at) AS at FROM voucher_events e
                                 WHERE e.voucher_id = v.id AND e.to_status = 'pending') sent ON true
            WHERE v.programme = %s AND v.cycle = %s""", (programme, cycle)).fetchone()
    out = {k: int(row[k]) for k in ("held", "cancelled_ineligible", "paid_ineligible")}
    return {**out, "ok": out["paid_ineligible"] == 0}


def _timeline(conn: psycopg.Connection[Any], programme: str, cycle: str, start: datetime | None,
              end: datetime | None, points: int = 48) -> dict[str, Any]:
    """Vouchers by status over time: the audit trail replayed into ``points`` time steps."""
    if start is None or end is None:
        return {"step_seconds": 0, "points": []}
    step = max((end - start) / points, timedelta(seconds=1))
    step = timedelta(seconds=int(step.total_seconds()) or 1)
    rows = conn.execute(
        """SELECT floor(extract(epoch FROM e.at - %(start)s) / %(step)s)::int AS slot, s.status, sum(s.delta)::int AS delta
             FROM voucher_events e JOIN vouchers v ON v.id = e.voucher_id
             CROSS JOIN LATERAL (VALUES (e.to_status, 1), (e.from_status, -1)) AS s(status, delta)
            WHERE v.programme = %(programme)s AND v.cycle = %(cycle)s AND s.status IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1""",
        {"start": start, "step": step.total_seconds(), "programme": programme, "cycle": cycle}).fetchall()
    last = max((r["slot"] for r in rows), default=0)
    running = dict.fromkeys(STATUSES, 0)
    by_slot: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_slot.setdefault(r["slot"], []).append(r)
    series = []
    for slot in range(last + 1):
        for r in by_slot.get(slot, []):
            running[r["status"]] = running.get(r["status"], 0) + r["delta"]
        series.append({"at": (start + step * (slot + 1)).isoformat(), **running})
    return {"step_seconds": int(step.total_seconds()), "points": series}


def _review(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, int]:
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE v.review_reason IS NOT NULL) AS vouchers_flagged,
                  count(*) FILTER (WHERE latest.action = 'flagged') AS reconciliation_flagged
             FROM vouchers v
             LEFT JOIN LATERAL (SELECT r.action FROM reconciliation_records r
                                  JOIN reconciliation_runs run ON run.id = r.run_id AND NOT run.dry_run
                                 WHERE r.voucher_id = v.id ORDER BY r.checked_at DESC, r.id DESC LIMIT 1) latest ON true
            WHERE v.programme = %s AND v.cycle = %s""", (programme, cycle)).fetchone()
    return {"vouchers_flagged": int(row["vouchers_flagged"]), "reconciliation_flagged": int(row["reconciliation_flagged"])}


def _duplicates(conn: psycopg.Connection[Any], programme: str, cycle: str,
                idempotency: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE w.outcome = 'duplicate') AS webhook_duplicates
             FROM webhook_receipts w JOIN vouchers v ON v.id = w.voucher_id
            WHERE v.programme = %s AND v.cycle = %s""", (programme, cycle)).fetchone()
    replays = [r["replays"] for r in idempotency["routes"].values()]
    return {"idempotency_replays": None if None in replays else sum(replays),
            "webhook_duplicates_logged": int(row["webhook_duplicates"]),
            "buffr_duplicates_refused": None}


def report(conn: psycopg.Connection[Any], programme: str, cycle: str, *,
           metrics: MetricTotals | None = None, buffr_duplicates_refused: int | None = None,
           now: datetime | None = None, anchors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole compliance report as plain data (JSON-ready; renderers in compliance_render).

    Every figure comes from one snapshot (a REPEATABLE READ, READ ONLY transaction when the
    caller has none open), so the counts, the arithmetic and the chain head describe one moment.
    ``anchors`` (read from the anchor bucket by the caller; None: not configured): the report names
    the latest one the database still agrees with (:func:`smartpay.anchors.latest_verified`).
    """
    factory = conn.row_factory
    conn.row_factory = dict_row  # type: ignore[assignment]
    own = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    try:
        with conn.transaction():
            if own:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            found = _report(conn, programme, cycle, metrics, buffr_duplicates_refused, now or datetime.now(UTC))
            found["anchors"] = ({"configured": False} if anchors is None
                                else anchor_heads.latest_verified(conn, anchors))
            return found
    finally:
        conn.row_factory = factory  # type: ignore[assignment]


def latest_reconciliation(conn: psycopg.Connection[Any], programme: str, cycle: str) -> list[dict[str, Any]]:
    """Each voucher's latest record from a real (not dry) run, counted by class and action (the
    compliance section and the reconcile function's cycle report both read it)."""
    return conn.execute(
        """WITH latest AS (
               SELECT DISTINCT ON (r.voucher_id) r.voucher_id, r.discrepancy, r.action, r.ketchup_amount_cents,
                      r.buffr_amount_cents
                 FROM reconciliation_records r
                 JOIN reconciliation_runs run ON run.id = r.run_id AND NOT run.dry_run
                 JOIN vouchers v ON v.id = r.voucher_id
                WHERE v.programme = %s AND v.cycle = %s
                ORDER BY r.voucher_id, r.checked_at DESC, r.id DESC)
           SELECT coalesce(discrepancy, 'match') AS class, action, count(*)::int AS count,
                  coalesce(sum(ketchup_amount_cents), 0)::bigint AS amount_cents,
                  coalesce(sum(buffr_amount_cents), 0)::bigint AS buffr_amount_cents
             FROM latest GROUP BY 1, 2 ORDER BY 1, 2""", (programme, cycle)).fetchall()


def reconciliation_coverage(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, Any]:
    """Real runs that checked the cycle's vouchers: how many, the last check, vouchers checked."""
    row = conn.execute(
        """SELECT count(DISTINCT r.run_id)::int AS runs, max(r.checked_at) AS last_checked_at,
                  count(DISTINCT r.voucher_id)::int AS vouchers_checked
             FROM reconciliation_records r JOIN reconciliation_runs run ON run.id = r.run_id AND NOT run.dry_run
             JOIN vouchers v ON v.id = r.voucher_id WHERE v.programme = %s AND v.cycle = %s""",
        (programme, cycle)).fetchone()
    return dict(row)


def _reconciliation(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, Any]:
    coverage = reconciliation_coverage(conn, programme, cycle)
    return {"discrepancies": latest_reconciliation(conn, programme, cycle),
            "reconciliation": {"vouchers_checked": coverage["vouchers_checked"]}}


def _report(conn: psycopg.Connection[Any], programme: str, cycle: str, metrics: MetricTotals | None,
            buffr_duplicates_refused: int | None, now: datetime) -> dict[str, Any]:
    statuses = _counts(conn, programme, cycle)
    reached = _reached(conn, programme, cycle)
    start, end = _window(conn, programme, cycle)
    cycle_recon = _reconciliation(conn, programme, cycle)
    idempotency = _idempotency(metrics, start, now)
    discrepancies = [d for d in cycle_recon["discrepancies"] if d["class"] != "match"]
    chain = audit_chain.verify(conn, programme=programme, cycle=cycle)
    duplicates = _duplicates(conn, programme, cycle, idempotency)
    duplicates["buffr_duplicates_refused"] = buffr_duplicates_refused
    vouchers = {"issued": reached["issued"], "sent": reached["sent"]}
    vouchers |= {s: {"count": statuses[s]["count"], "amount_cents": statuses[s]["amount_cents"]}
                 for s in STATUSES if s != "issued"}
    vouchers["not_yet_sent"] = {"count": statuses["issued"]["count"], "amount_cents": statuses["issued"]["amount_cents"]}
    latency = _latency(conn, programme, cycle)
    credited, attempted = reached["credited"]["count"], reached["sent"]["count"]
    return {
        "report": "compliance", "programme": programme, "cycle": cycle,
        "generated_at": now.isoformat(),
        "window": {"first_event_at": start.isoformat() if start else None,
                   "last_event_at": end.isoformat() if end else None},
        "vouchers": vouchers,
        "statuses": statuses,
        "arithmetic": arithmetic(reached["issued"], statuses),
        "rates": {
            "success": {"credited": credited, "attempted": attempted, "rate": _rate(credited, attempted),
                        "credited_cents": reached["credited"]["amount_cents"],
                        "attempted_cents": reached["sent"]["amount_cents"]},
            "discrepancies": {"count": sum(d["count"] for d in discrepancies),
                              "checked": cycle_recon["reconciliation"].get("vouchers_checked") or 0,
                              "by_class": discrepancies},
            "idempotency": idempotency,
            "webhook_latency": latency,
        },
        "eligibility": _eligibility(conn, programme, cycle),
        "duplicates_prevented": duplicates,
        "review": _review(conn, programme, cycle),
        "timeline": _timeline(conn, programme, cycle, start, end),
        "audit_chain": chain.as_dict(),
    }


def checks(report: dict[str, Any]) -> dict[str, bool]:
    """The pass/fail lines of the report: what an auditor signs off."""
    return {"arithmetic": report["arithmetic"]["ok"],
            "no payment to an ineligible beneficiary": report["eligibility"]["ok"],
            "audit chain verifies": report["audit_chain"]["ok"],
            **({"latest anchor agrees": (report["anchors"]["latest_verified"] is not None
                                         and report["anchors"]["newer_disagreeing"] == 0)}
               if report.get("anchors", {}).get("configured") and report["anchors"]["anchors"] else {})}


# --- metric sources ---------------------------------------------------------------------------------

def emf_totals(lines: Iterable[str]) -> MetricTotals:
    """Totals from CloudWatch Embedded Metric Format lines (what each function prints to its log),
    by metric name and ``route`` dimension. Other lines are skipped; times are not filtered
    (a local log holds one run)."""
    sums: dict[tuple[str, str], float] = {}
    for line in lines:
        start = line.find('{"_aws"')
        if start < 0:
            continue
        try:
            blob = json.loads(line[start:])
            directives = blob["_aws"]["CloudWatchMetrics"]
        except (ValueError, KeyError, TypeError):
            continue
        route = str(blob.get("route", ""))
        for directive in directives:
            for metric in directive.get("Metrics", []):
                value = blob.get(metric["Name"])
                values = value if isinstance(value, list) else [value]
                sums[(metric["Name"], route)] = sums.get((metric["Name"], route), 0.0) + sum(
                    float(v) for v in values if isinstance(v, (int, float)))

    def total(name: str, route: str, start: datetime, end: datetime) -> float | None:
        return sums.get((name, route), 0.0) if sums else None

    return total


def totals_from(sums: dict[tuple[str, str], float]) -> MetricTotals:
    """Totals already counted elsewhere (e.g. by the Buffr simulator in the demo), by (name, route)."""

    def total(name: str, route: str, start: datetime, end: datetime) -> float | None:
        return sums.get((name, route))

    return total


def cloudwatch_totals(client: Any, namespace: str, services: dict[str, str]) -> MetricTotals:
    """Totals from CloudWatch (a deployed stack): the sum of ``name`` with dimensions
    ``service`` (the route's function) and ``route`` over the window, in daily periods."""

    def total(name: str, route: str, start: datetime, end: datetime) -> float | None:
        reply = client.get_metric_statistics(
            Namespace=namespace, MetricName=name, StartTime=start, EndTime=end + timedelta(minutes=1),
            Period=86_400, Statistics=["Sum"],
            Dimensions=[{"Name": "service", "Value": services[route]}, {"Name": "route", "Value": route}])
        return float(sum(p["Sum"] for p in reply.get("Datapoints", [])))

    return total
