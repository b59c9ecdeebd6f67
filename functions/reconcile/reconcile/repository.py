"""Data access for the reconcile function: every SQL statement it runs lives here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg

ZERO_ID = "00000000-0000-0000-0000-000000000000"
_RUN = """id::text AS id, mode, window_start, window_end, shard, shards, dry_run, options, status,
          cursor::text AS cursor, checked, matched, healed, flagged, unavailable, redisbursed, invocations,
          duration_ms, started_at, finished_at"""
_VOUCHER = "v.id::text AS id, v.status, v.amount_cents, v.status_changed_at, v.buffr_delivery_id"
_NOT_RECORDED = "NOT EXISTS (SELECT 1 FROM reconciliation_records r WHERE r.run_id = %(run)s AND r.voucher_id = v.id)"
_SHARD = "(%(shards)s = 1 OR smartpay_shard(v.id, %(shards)s) = %(shard)s)"


def lease_name(shard: int, shards: int, dry_run: bool) -> str:
    """The lease of one shard split (smartpay/leases.py): one invocation works on it at a time."""
    return f"reconcile:{shard}/{shards}:{'dry' if dry_run else 'real'}"


def running_run(conn: psycopg.Connection[Any], shard: int, shards: int, dry_run: bool) -> dict[str, Any] | None:
    return conn.execute(
        f"""SELECT {_RUN} FROM reconciliation_runs
             WHERE status = 'running' AND mode <> 'vouchers' AND shard = %s AND shards = %s AND dry_run = %s""",
        (shard, shards, dry_run)).fetchone()


def last_window_end(conn: psycopg.Connection[Any], shard: int, shards: int) -> datetime | None:
    """Where the last completed (real) run of this shard split stopped looking."""
    row = conn.execute(
        """SELECT window_end FROM reconciliation_runs
            WHERE status = 'completed' AND shards = %s AND shard = %s AND NOT dry_run AND mode <> 'vouchers'
            ORDER BY window_end DESC LIMIT 1""", (shards, shard)).fetchone()
    return None if row is None else row["window_end"]


def create_run(conn: psycopg.Connection[Any], *, mode: str, window_start: datetime | None, shard: int, shards: int,
               dry_run: bool, options: dict[str, Any]) -> dict[str, Any] | None:
    """A new run, or None if another invocation created the same shard split's run first."""
    return conn.execute(
        f"""INSERT INTO reconciliation_runs (mode, window_start, shard, shards, dry_run, options)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (shard, shards, dry_run) WHERE status = 'running' AND mode <> 'vouchers' DO NOTHING
            RETURNING {_RUN}""",
        (mode, window_start, shard, shards, dry_run, json.dumps(options))).fetchone()


def get_run(conn: psycopg.Connection[Any], run_id: str) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {_RUN} FROM reconciliation_runs WHERE id = %s", (run_id,)).fetchone()


def _selection(run: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The WHERE clause choosing this run's vouchers (without the keyset part) and its parameters."""
    params: dict[str, Any] = {"run": run["id"], "shard": run["shard"], "shards": run["shards"]}
    if run["mode"] == "vouchers":
        params["ids"] = run["options"]["voucher_ids"]
        return "v.id = ANY(%(ids)s::uuid[])", params
    params["since"] = run["window_start"]
    return "", params


def page(conn: psycopg.Connection[Any], run: dict[str, Any], after: str, size: int) -> list[dict[str, Any]]:
    """The next ``size`` vouchers of the run after ``after`` by id (keyset; never OFFSET), skipping
    those the run already recorded (a resumed invocation may have answered some past its cursor).

    Open vouchers (pending, active) come from the partial open index in id order; vouchers that
    left the open states within the window come from their own keyset scan; the two are merged.
    """
    where, params = _selection(run)
    params.update(after=after, n=size)
    if where:
        sql = f"""SELECT {_VOUCHER} FROM vouchers v
                   WHERE {where} AND v.id > %(after)s AND {_NOT_RECORDED}
                   ORDER BY v.id LIMIT %(n)s"""
    else:
        since = "AND v.status_changed_at >= %(since)s" if params["since"] is not None else "AND false"
        sql = f"""SELECT * FROM (
                    (SELECT {_VOUCHER} FROM vouchers v
                      WHERE v.status IN ('pending', 'active') AND v.id > %(after)s AND {_SHARD} AND {_NOT_RECORDED}
                      ORDER BY v.id LIMIT %(n)s)
                    UNION ALL
                    (SELECT {_VOUCHER} FROM vouchers v
                      WHERE v.status NOT IN ('pending', 'active') {since}
                        AND v.id > %(after)s AND {_SHARD} AND {_NOT_RECORDED}
                      ORDER BY v.id LIMIT %(n)s)
                  ) AS both_ ORDER BY id LIMIT %(n)s"""
    # prepare=False: planned with the real window each time (a tiny incremental window and a
    # cycle-long full one want different plans).
    return conn.execute(sql, params, prepare=False).fetchall()


def remaining(conn: psycopg.Connection[Any], run: dict[str, Any]) -> int:
    """Vouchers of the run not recorded yet (what the next invocation still has to check)."""
    where, params = _selection(run)
    if where:
        sql = f"SELECT count(*) AS n FROM vouchers v WHERE {where} AND {_NOT_RECORDED}"
    else:
        since = "OR v.status_changed_at >= %(since)s" if params["since"] is not None else ""
        sql = f"""SELECT count(*) AS n FROM vouchers v
                   WHERE (v.status IN ('pending', 'active') {since}) AND {_SHARD} AND {_NOT_RECORDED}"""
    return int(conn.execute(sql, params, prepare=False).fetchone()["n"])


def insert_records(conn: psycopg.Connection[Any], run_id: str, records: list[dict[str, Any]]) -> int:
    """One statement for a page of records; a voucher already recorded in the run is skipped."""
    if not records:
        return 0
    cols = ("voucher_id", "ketchup_status", "buffr_status", "ketchup_amount_cents", "buffr_amount_cents", "match",
            "discrepancy", "action", "detail")
    arrays = [[r[c] for r in records] for c in cols]
    cur = conn.execute(
        """INSERT INTO reconciliation_records (run_id, voucher_id, ketchup_status, buffr_status,
                                               ketchup_amount_cents, buffr_amount_cents, match, discrepancy,
                                               action, detail)
           SELECT %s, * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bool[],
                                    %s::text[], %s::text[], %s::text[])
           ON CONFLICT ON CONSTRAINT reconciliation_records_once_per_run DO NOTHING""",
        (run_id, *arrays))
    return cur.rowcount


def advance(conn: psycopg.Connection[Any], run_id: str, cursor: str | None, counts: dict[str, int]) -> None:
    """Add a page's counts to the run and move its cursor (never backwards)."""
    conn.execute(
        """UPDATE reconciliation_runs
              SET checked = checked + %(checked)s, matched = matched + %(matched)s, healed = healed + %(healed)s,
                  flagged = flagged + %(flagged)s, unavailable = unavailable + %(unavailable)s,
                  redisbursed = redisbursed + %(redisbursed)s,
                  cursor = CASE WHEN %(cursor)s::uuid IS NULL THEN cursor
                                ELSE greatest(coalesce(cursor, %(cursor)s::uuid), %(cursor)s::uuid) END,
                  updated_at = now()
            WHERE id = %(id)s""",
        {**counts, "cursor": cursor, "id": run_id})


def end_invocation(conn: psycopg.Connection[Any], run_id: str, duration_ms: int, completed: bool) -> dict[str, Any]:
    return conn.execute(
        f"""UPDATE reconciliation_runs
               SET invocations = invocations + 1, duration_ms = duration_ms + %s, updated_at = now(),
                   status = CASE WHEN %s THEN 'completed' ELSE status END,
                   finished_at = CASE WHEN %s THEN now() ELSE finished_at END
             WHERE id = %s RETURNING {_RUN}""",
        (duration_ms, completed, completed, run_id)).fetchone()
