"""One reconciliation step per invocation: walk the run's vouchers, ask Buffr, heal or flag, save.

How a run stays exactly-once across invocations, shards and crashes:

* A run belongs to one shard split (``shard``/``shards``/``dry_run``); a unique index allows one
  unfinished run per split and a lease (smartpay/leases.py, never a session lock that would pin
  the connection behind RDS Proxy) lets one invocation work on it at a time (an overlapping
  scheduled invocation returns at once with ``stopped="busy"``).
* Vouchers are walked by keyset pages in id order. Each page's records (UNIQUE(run_id,
  voucher_id)), its heals and the run's counters and cursor commit in one transaction, so a
  crash loses at most the page in flight, which the next invocation checks again.
* Buffr is asked for page *k+1* while page *k* is written (one page in flight, bounded
  concurrency and rate inside it), so the database work hides behind the HTTP time.
* The invocation stops before the Lambda deadline: no new page is started when the last
  page's time no longer fits, and every Buffr call has the deadline minus a safety margin.
  A voucher whose call was cut by that deadline is not recorded and the cursor stays before it.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from reconcile import repository
from reconcile.classify import Verdict, classify
from reconcile.models import ReconcileReply, ReconcileRequest
from reconcile.redisburse import redisburse
from smartpay import anchors, buffr, db, leases
from smartpay.observability import NAMESPACE, logger, metrics
from smartpay.settings import env_float, env_int
from smartpay.transitions import Change, transition_many

SOURCE = "reconcile"


@dataclass(frozen=True)
class Settings:
    page_size: int
    concurrency: int | None
    rate_per_s: float
    grace: timedelta
    margin_s: float
    lookback: timedelta
    full_window: timedelta

    @classmethod
    def for_request(cls, request: ReconcileRequest) -> Settings:
        rate = request.rate_per_s if request.rate_per_s is not None else env_float("RECONCILE_RATE_PER_S", 0.0)
        grace_s = request.grace_seconds if request.grace_seconds is not None else env_int(
            "RECONCILE_PENDING_GRACE_S", 900, minimum=0)
        return cls(
            page_size=request.page_size or env_int("RECONCILE_PAGE_SIZE", 1000, minimum=1, maximum=10_000),
            concurrency=request.concurrency,
            rate_per_s=rate,
            grace=timedelta(seconds=grace_s),
            margin_s=env_float("RECONCILE_SAFETY_MARGIN_S", 10.0),
            lookback=timedelta(hours=env_int("RECONCILE_LOOKBACK_HOURS", 24, minimum=1)),
            full_window=timedelta(days=env_int("RECONCILE_FULL_WINDOW_DAYS", 35, minimum=1)),
        )


@dataclass
class Page:
    rows: list[dict[str, Any]]
    results: Future[list[buffr.BuffrResult]]
    started: float


# --- the run --------------------------------------------------------------------------------------

def _open_run(conn: Any, request: ReconcileRequest, settings: Settings) -> tuple[dict[str, Any], bool]:
    """The unfinished run of this shard split (resumed), or a new one."""
    if request.mode != "vouchers":
        run = repository.running_run(conn, request.shard, request.shards, request.dry_run)
        if run is not None:
            return run, True
    now = datetime.now(UTC)
    if request.mode == "vouchers":
        window_start = None
    elif request.since is not None:
        window_start = request.since
    elif request.mode == "full":
        window_start = now - settings.full_window
    else:
        window_start = repository.last_window_end(conn, request.shard, request.shards) or now - settings.lookback
    options = {"redisburse_pending": request.redisburse_pending,
               "grace_seconds": int(settings.grace.total_seconds())}
    if request.voucher_ids is not None:
        options["voucher_ids"] = sorted({str(v) for v in request.voucher_ids})
    with conn.transaction():
        run = repository.create_run(conn, mode=request.mode, window_start=window_start, shard=request.shard,
                                    shards=request.shards, dry_run=request.dry_run, options=options)
    if run is None:  # created concurrently by an invocation that held the lock before us
        run = repository.running_run(conn, request.shard, request.shards, request.dry_run)
        return run, True
    return run, False


def reconcile(request: ReconcileRequest, context: Any) -> ReconcileReply:
    """Check (the rest of) a run within this invocation's time; see the module docstring."""
    started = time.monotonic()
    settings = Settings.for_request(request)
    lease = repository.lease_name(request.shard, request.shards, request.dry_run)
    with db.autocommit() as conn:  # the shard's lease is a row, not a session lock; pages are explicit transactions
        holder = None if request.mode == "vouchers" else leases.acquire(conn, lease, leases.ttl_for(context, 900))
        if request.mode != "vouchers" and holder is None:
            run = repository.running_run(conn, request.shard, request.shards, request.dry_run)
            logger.info("another invocation is reconciling this shard", extra={"shard": request.shard,
                                                                                "shards": request.shards})
            return _reply(run, resumed=True, remaining=-1 if run else 0, invocation=Counter(), classes=Counter(),
                          stopped="busy", request=request)
        try:
            run, resumed = _open_run(conn, request, settings)
            logger.append_keys(run_id=run["id"])
            invocation, classes, stopped = _walk(conn, run, request, settings, context)
            remaining = repository.remaining(conn, run)
            run = repository.end_invocation(conn, run["id"], int((time.monotonic() - started) * 1000),
                                            completed=remaining == 0)
            if run["status"] == "completed" and not request.dry_run:
                anchors.write_after(conn, kind="reconcile", reference=str(run["id"]))
        finally:
            if holder is not None:
                leases.release(conn, lease, holder)
    _emit_metrics(invocation, classes, remaining, time.monotonic() - started)
    logger.info("reconciliation step finished", extra={"checked": invocation["checked"], "remaining": remaining,
                                                       "status": run["status"], "stopped": stopped})
    return _reply(run, resumed=resumed, remaining=remaining, invocation=invocation, classes=classes,
                  stopped=stopped, request=request)


def _reply(run: dict[str, Any] | None, *, resumed: bool, remaining: int, invocation: Counter[str],
           classes: Counter[str], stopped: str | None, request: ReconcileRequest) -> ReconcileReply:
    if run is None:  # busy, and the other invocation finished the run meanwhile
        run = {"id": "00000000-0000-0000-0000-000000000000", "status": "completed", "mode": request.mode,
               "dry_run": request.dry_run, "shard": request.shard, "shards": request.shards, "checked": 0,
               "matched": 0, "healed": 0, "flagged": 0, "redisbursed": 0, "unavailable": 0}
    return ReconcileReply(run_id=run["id"], status=run["status"], mode=run["mode"], resumed=resumed,
                          dry_run=run["dry_run"], shard=run["shard"], shards=run["shards"], checked=run["checked"],
                          matched=run["matched"], healed=run["healed"], flagged=run["flagged"],
                          redisbursed=run["redisbursed"], unavailable=run["unavailable"], remaining=remaining,
                          invocation_checked=invocation["checked"], discrepancies=dict(classes), stopped=stopped)


def _walk(conn: Any, run: dict[str, Any], request: ReconcileRequest, settings: Settings,
          context: Any) -> tuple[Counter[str], Counter[str], str | None]:
    client = buffr.client()
    hard_deadline = buffr.deadline_from(context, settings.margin_s)
    budget = request.max_vouchers
    totals: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    cursor = run["cursor"] or repository.ZERO_ID
    page_seconds = 0.0  # the slowest page so far: a new page starts only if one more fits
    stopped: str | None = None

    def ask(rows: list[dict[str, Any]]) -> Page:
        ids = [r["id"] for r in rows]
        kwargs: dict[str, Any] = {"deadline": hard_deadline, "concurrency": settings.concurrency}
        if settings.rate_per_s:
            kwargs["rate_per_s"] = settings.rate_per_s
        return Page(rows, pool.submit(client.status_many, ids, **kwargs), time.monotonic())

    def next_rows(after: str) -> list[dict[str, Any]]:
        size = settings.page_size if budget is None else min(settings.page_size, budget - totals["fetched"])
        if size <= 0:
            return []
        rows = repository.page(conn, run, after, size)
        totals["fetched"] += len(rows)
        return rows

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile-http") as pool:
        rows = next_rows(cursor)
        current = ask(rows) if rows else None
        while current is not None:
            results = current.results.result()
            page_seconds = max(page_seconds, time.monotonic() - current.started)
            late = time.monotonic() >= hard_deadline - 0.06
            upcoming: Page | None = None
            if time.monotonic() + page_seconds >= hard_deadline:
                stopped = "deadline"
            elif not late:
                more = next_rows(current.rows[-1]["id"])
                upcoming = ask(more) if more else None
                if upcoming is None and budget is not None and totals["fetched"] >= budget:
                    stopped = "max_vouchers"
            counts, page_classes, cut = _write_page(conn, run, current.rows, results, settings, late)
            totals.update(counts)
            classes.update(page_classes)
            if cut:
                stopped = "deadline"
                if upcoming is not None:  # answered after the cut: recorded, the cursor stays put
                    counts, page_classes, _ = _write_page(conn, run, upcoming.rows, upcoming.results.result(),
                                                          settings, True, move_cursor=False)
                    totals.update(counts)
                    classes.update(page_classes)
                break
            current = upcoming
    return totals, classes, stopped


# --- one page -------------------------------------------------------------------------------------

def _write_page(conn: Any, run: dict[str, Any], rows: list[dict[str, Any]], results: list[buffr.BuffrResult],
                settings: Settings, late: bool, *, move_cursor: bool = True) -> tuple[Counter[str], Counter[str], bool]:
    """Classify a page, heal/flag/re-send, and commit its records, counters and cursor together.

    Returns (counts, discrepancy classes, cut): ``cut`` when some vouchers went unanswered because
    our own deadline stopped their calls; those are not recorded and the cursor stops before them.
    """
    now = datetime.now(UTC)
    checked: list[tuple[dict[str, Any], Verdict]] = []
    cursor: str | None = None
    cut = False
    for row, result in zip(rows, results, strict=True):
        ours_cut = result.outcome == "unavailable" and (result.error == "deadline" or late)
        if ours_cut:
            cut = True
            continue
        if not cut:
            cursor = row["id"]
        checked.append((row, classify(row, result.outcome, result.body, now=now, grace=settings.grace,
                                      error=result.error)))
    dry = run["dry_run"]
    enabled = bool(run["options"].get("redisburse_pending"))
    resend = [row["id"] for row, v in checked if v.plan == "redisburse_or_flag" and enabled]
    resent = redisburse(resend, run_id=run["id"]) if resend and not dry else {}
    counts: Counter[str] = Counter()
    classes: Counter[str] = Counter(v.discrepancy for _, v in checked if v.discrepancy)
    with conn.transaction():
        heals = [Change(row["id"], v.target, delivery_id=None if row["buffr_delivery_id"] else v.buffr_delivery_id,
                        detail={"run_id": run["id"], "discrepancy": v.discrepancy, "buffr_status": v.buffr_status})
                 for row, v in checked if v.plan in ("heal", "heal_flag")]
        healed = {} if dry or not heals else {
            t.voucher_id: t for t in transition_many(conn, heals, source=SOURCE, reference=run["id"])}
        records = []
        for row, v in checked:
            match, action, detail = _act(row, v, dry, healed.get(row["id"]), resent.get(row["id"]),
                                         enabled)
            records.append({"voucher_id": row["id"], "ketchup_status": row["status"], "buffr_status": v.buffr_status,
                            "ketchup_amount_cents": row["amount_cents"], "buffr_amount_cents": v.buffr_amount_cents,
                            "match": match, "discrepancy": v.discrepancy, "action": action, "detail": detail})
            counts[action] += 1
            counts["matched"] += match
            counts["unavailable"] += v.discrepancy == "unavailable"
        repository.insert_records(conn, run["id"], records)
        counts["checked"] = len(records)
        repository.advance(conn, run["id"], cursor if move_cursor else None, {
            "checked": len(records), "matched": counts["matched"], "healed": counts["healed"],
            "flagged": counts["flagged"], "unavailable": counts["unavailable"], "redisbursed": counts["redisbursed"]})
    return counts, classes, cut


def _act(row: dict[str, Any], v: Verdict, dry: bool, healed: Any, resent: dict[str, Any] | None,
         enabled: bool) -> tuple[bool, str, str | None]:
    """(match, action, detail) for one record, from the plan and what actually happened."""
    would = "dry run: would " if dry else ""
    if v.plan == "none":
        return v.match, "none", v.detail
    if v.plan == "flag":
        return False, "flagged", v.detail
    if v.plan == "redisburse_or_flag":
        if resent is None:  # re-sending not enabled for this run, or a dry run
            if dry and enabled:
                return False, "redisbursed", f"{would}re-send with the same idempotency key; {v.detail}"
            return False, "flagged", v.detail
        if resent.get("ok"):
            return False, "redisbursed", (f"re-sent through disburse (same idempotency key): "
                                          f"{resent.get('outcome')}; {v.detail}")
        return False, "flagged", f"{v.detail}; re-send failed: {resent.get('reason')}"
    # heal / heal_flag
    action = "flagged" if v.plan == "heal_flag" else "healed"
    if dry:
        return False, action, f"{would}move {row['status']} → {v.target}; {v.detail}"
    if healed is not None and healed.applied:
        note = f"moved {healed.from_status} → {healed.to_status}"
        return False, action, f"{note}; {v.detail}" + ("; flagged for review" if action == "flagged" else "")
    if healed is not None and healed.outcome == "duplicate":
        return True, "none", f"already {v.target} (changed by another writer meanwhile)"
    now_status = healed.from_status if healed is not None else "gone"
    return False, "none", f"changed by another writer meanwhile (now {now_status}); the next run re-checks it"


def _emit_metrics(invocation: Counter[str], classes: Counter[str], remaining: int, seconds: float) -> None:
    for name, key in (("ReconciliationChecked", "checked"), ("ReconciliationHealed", "healed"),
                      ("ReconciliationFlagged", "flagged"), ("ReconciliationRedisbursed", "redisbursed"),
                      ("ReconciliationUnavailable", "unavailable")):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=invocation[key])
    metrics.add_metric(name="ReconciliationDiscrepancies", unit=MetricUnit.Count,
                       value=sum(n for c, n in classes.items() if c not in ("pending_in_grace", "unavailable")))
    metrics.add_metric(name="ReconciliationRemaining", unit=MetricUnit.Count, value=max(remaining, 0))
    metrics.add_metric(name="ReconciliationDuration", unit=MetricUnit.Milliseconds, value=int(seconds * 1000))
    for name, n in classes.items():
        with single_metric(name="ReconciliationDiscrepanciesByClass", unit=MetricUnit.Count, value=n,
                           namespace=NAMESPACE) as metric:
            metric.add_dimension(name="class", value=name)
