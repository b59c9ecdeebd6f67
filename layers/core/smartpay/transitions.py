"""The only code that changes a voucher's status.

Every writer (disburse, webhook, reconcile, operator) calls :func:`transition` inside its own
transaction. The voucher row is locked (``SELECT … FOR UPDATE``) so two concurrent writers are
serialised; the lifecycle table decides; the update and its audit row commit together.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from smartpay.lifecycle import VoucherStatus, decide

SOURCES = frozenset({"disburse", "webhook", "reconcile", "operator"})


@dataclass(frozen=True)
class TransitionResult:
    outcome: str  # applied | duplicate | stale | not_found
    voucher_id: str
    from_status: str | None
    to_status: str
    review_reason: str | None = None

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


@dataclass(frozen=True)
class Change:
    """One requested status change (for :func:`transition_many`)."""

    voucher_id: str
    target: VoucherStatus | str
    delivery_id: str | None = None
    failure_reason: str | None = None
    detail: dict[str, Any] | None = None


def transition(
    conn: psycopg.Connection[Any],
    voucher_id: str | uuid.UUID,
    target: VoucherStatus | str,
    *,
    source: str,
    reference: str | None,
    detail: dict[str, Any] | None = None,
    delivery_id: str | None = None,
    failure_reason: str | None = None,
) -> TransitionResult:
    """Move one voucher towards ``target`` if the lifecycle allows it; audit it in the same transaction."""
    change = Change(str(voucher_id), target, delivery_id, failure_reason, detail)
    return transition_many(conn, [change], source=source, reference=reference)[0]


def transition_many(
    conn: psycopg.Connection[Any], changes: list[Change], *, source: str, reference: str | None
) -> list[TransitionResult]:
    """:func:`transition` for many vouchers at once: one lock, one UPDATE, one audit INSERT.

    Rows are locked in id order (no deadlock between two batches); each change is decided by
    the lifecycle table exactly as a single transition would be. Results are in input order.
    The UPDATE and the audit INSERT return no rows, so they are pipelined: inside the caller's
    own pipeline (:func:`smartpay.db.transaction` with ``pipelined=True``) they travel with the
    caller's next read or its COMMIT, otherwise they cost one round trip together.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown transition source {source!r}")
    ids = [str(c.voucher_id) for c in changes]
    if len(set(ids)) != len(ids):
        raise ValueError("transition_many: a voucher may appear only once per call")
    if not ids:
        return []
    rows = conn.execute(
        "SELECT id::text AS id, status FROM vouchers WHERE id = ANY(%b::uuid[]) ORDER BY id FOR UPDATE", (ids,)
    ).fetchall()
    current = {(r["id"] if isinstance(r, dict) else r[0]): (r["status"] if isinstance(r, dict) else r[1])
               for r in rows}
    results: list[TransitionResult] = []
    applied: list[tuple[Change, str, str, str | None]] = []
    for change in changes:
        vid, target = str(change.voucher_id), VoucherStatus(change.target)
        if vid not in current:
            results.append(TransitionResult("not_found", vid, None, target.value))
            continue
        decision = decide(current[vid], target)
        if not decision.applies:
            results.append(TransitionResult(decision.outcome, vid, current[vid], target.value))
            continue
        applied.append((change, current[vid], target.value, decision.review_reason))
        results.append(TransitionResult("applied", vid, current[vid], target.value, decision.review_reason))
    if applied:
        columns = [list(col) for col in zip(*[
            (str(c.voucher_id), to, c.delivery_id, c.failure_reason, review)
            for c, _from, to, review in applied
        ], strict=True)]
        details = []
        for c, _from, _to, review in applied:
            audit = dict(c.detail or {})
            if review:
                audit["review_reason"] = review
            details.append(json.dumps(audit) if audit else None)
        joined = conn.pgconn.pipeline_status != pq.PipelineStatus.OFF
        with contextlib.nullcontext() if joined else conn.pipeline():
            conn.execute(
                """UPDATE vouchers AS v
                      SET status = c.to_status,
                          status_changed_at = now(),
                          version = v.version + 1,
                          buffr_delivery_id = COALESCE(c.delivery, v.buffr_delivery_id),
                          failure_reason = COALESCE(c.failure, v.failure_reason),
                          review_reason = COALESCE(c.review, v.review_reason)
                     FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[], %b::text[])
                          AS c(id, to_status, delivery, failure, review)
                    WHERE v.id = c.id""",
                columns,
            )
            conn.execute(
                """INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference, detail)
                   SELECT id, from_status, to_status, %s, %s, detail
                     FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::jsonb[])
                          AS e(id, from_status, to_status, detail)""",
                (source, reference, columns[0], [a[1] for a in applied], [a[2] for a in applied], details),
            )
    return results


def record_issue(
    conn: psycopg.Connection[Any], voucher_id: str | uuid.UUID, *, source: str, reference: str | None
) -> None:
    """The audit row for a voucher's creation (from ``None`` to ``issued``)."""
    conn.execute(
        """INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference)
           VALUES (%s, NULL, 'issued', %s, %s)""",
        (str(voucher_id), source, reference),
    )


def record_issues(
    conn: psycopg.Connection[Any], voucher_ids: list[str], *, source: str, reference: str | None
) -> None:
    """:func:`record_issue` for many new vouchers in one statement (bulk payroll import)."""
    if voucher_ids:
        conn.execute(
            """INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference)
               SELECT id, NULL, 'issued', %s, %s FROM unnest(%s::uuid[]) AS id""",
            (source, reference, [str(v) for v in voucher_ids]),
        )
