"""Anchors: the audit chain's heads kept outside the database, where its owner cannot rewrite them.

Whoever holds the owner's rights can edit an old ``voucher_events`` row and recompute every later
hash: ``audit verify`` then passes, since the chain is consistent again. An anchor pins the heads
as they were. After each reconcile run and each completed cycle run, :func:`write` computes the
heads (:func:`smartpay.audit_chain.head`) as of the last audit row old enough to be settled —
the global head and one per programme cycle — and puts them, as one JSON object, into the anchor
bucket: S3 with Object Lock in compliance mode (the bucket's default retention, a stack
parameter), which no one, the account's root included, can shorten or delete before it ends. The
functions may only ``PutObject`` there. ``smartpay audit verify --anchors`` reads every version of
every anchor and compares each with the heads recomputed as of its row (:func:`check`).

``upto`` lags ``ANCHOR_SETTLE_S`` seconds behind the newest row: an audit row's id is taken when
its transaction writes it, not when it commits, so a row of a transaction still open could
otherwise land below an anchor after it was written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from smartpay.observability import logger
from smartpay.settings import env_int, env_str

VERSION = 1
PREFIX = "anchors/"

# The heads as of audit row ``upto``: each voucher's last hash up to it, hashed per programme cycle
# and over all (GROUPING SETS), exactly as audit_chain.head does (sha256 over '<id>:<hex>\n' in
# voucher id order, byte order: COLLATE "C").
_HEADS = """
WITH last AS (
    SELECT DISTINCT ON (e.voucher_id) e.voucher_id, e.hash
      FROM voucher_events e WHERE e.id <= %(upto)s ORDER BY e.voucher_id, e.id DESC
)
SELECT v.programme, v.cycle,
       encode(sha256(convert_to('smartpay-audit-v1|head'
              || string_agg(l.voucher_id::text || ':' || encode(l.hash, 'hex') || E'\\n', ''
                            ORDER BY l.voucher_id::text COLLATE "C"), 'UTF8')), 'hex')
  FROM last l JOIN vouchers v ON v.id = l.voucher_id
 GROUP BY GROUPING SETS ((v.programme, v.cycle), ())
"""


@dataclass(frozen=True)
class Heads:
    upto: int
    global_head: str
    cycles: dict[str, str]  # "<programme> <cycle>" -> head

    def as_dict(self) -> dict[str, Any]:
        return {"upto_event_id": self.upto, "global": self.global_head, "cycles": self.cycles}


def heads(conn: psycopg.Connection[Any], upto: int) -> Heads:
    """The heads as of audit row ``upto`` (from the stored hashes; ``audit verify`` recomputes those)."""
    global_head, cycles = "", {}
    for programme, cycle, value in conn.cursor(row_factory=tuple_row).execute(_HEADS, {"upto": upto}):
        if programme is None:
            global_head = value
        else:
            cycles[f"{programme} {cycle}"] = value
    return Heads(upto, global_head, dict(sorted(cycles.items())))


def settled_upto(conn: psycopg.Connection[Any], settle_s: int) -> int | None:
    row = conn.execute("SELECT max(id) FROM voucher_events WHERE at < now() - make_interval(secs => %s)",
                       (settle_s,)).fetchone()
    value = row[0] if isinstance(row, tuple) else next(iter(row.values()))
    return None if value is None else int(value)


def s3_client() -> Any:
    """An S3 client with bounded timeouts and retries (endpoint and region from the environment)."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", config=Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}))


def write(conn: psycopg.Connection[Any], *, kind: str, reference: str, bucket: str | None = None,
          client: Any = None) -> dict[str, Any] | None:
    """Compute the heads and put them in the anchor bucket; the anchor written (None: no bucket
    configured, or no settled audit row yet). One read-only snapshot on ``conn``."""
    bucket = bucket if bucket is not None else env_str("AUDIT_ANCHOR_BUCKET", "")
    if not bucket:
        return None
    outer = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE  # then the caller's snapshot
    with conn.transaction():
        if not outer:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        upto = settled_upto(conn, env_int("ANCHOR_SETTLE_S", 120, minimum=0))
        if upto is None:
            return None
        found = heads(conn, upto)
    now = datetime.now(UTC)
    anchor = {"version": VERSION, "kind": kind, "reference": reference, "written_at": now.isoformat(),
              **found.as_dict()}
    key = f"{PREFIX}{now:%Y/%m/%d/%H%M%S%f}-{upto:012d}-{kind}.json"
    (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=json.dumps(anchor, sort_keys=True).encode(),
                                       ContentType="application/json", ChecksumAlgorithm="SHA256")
    logger.info("audit anchor written", extra={"anchor_key": key, "upto_event_id": upto, "cycles": len(found.cycles)})
    return {"key": key, **anchor}


def read_all(client: Any, bucket: str) -> list[dict[str, Any]]:
    """Every version of every anchor in the bucket (an anchor put again under its key is one more
    version; the locked first stays), in the order of the rows they pin."""
    found = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=PREFIX):
        for version in page.get("Versions", []):
            body = client.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
            found.append({"key": version["Key"], "version_id": version["VersionId"], **json.loads(body)})
    return sorted(found, key=lambda a: (int(a["upto_event_id"]), a["key"]))


@dataclass
class AnchorCheck:
    checked: int = 0
    latest: dict[str, Any] | None = None  # the latest anchor that agrees
    disagreeing: dict[str, Any] | None = None  # the first that does not
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.disagreeing is None

    def as_dict(self) -> dict[str, Any]:
        def name(a: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if a is None else {"key": a["key"], "upto_event_id": a["upto_event_id"],
                                           "written_at": a["written_at"]}
        return {"ok": self.ok, "checked": self.checked, "latest_verified": name(self.latest),
                "first_disagreeing": name(self.disagreeing), "reason": self.reason or None}


def check(conn: psycopg.Connection[Any], anchors: list[dict[str, Any]]) -> AnchorCheck:
    """Compare each anchor (in order) with the heads recomputed as of its row; stop at the first
    that disagrees. Run after ``audit_chain.verify`` passed (the stored hashes are then the
    recomputed ones)."""
    result = AnchorCheck()
    for anchor in anchors:
        now = heads(conn, int(anchor["upto_event_id"]))
        result.checked += 1
        if now.global_head != anchor["global"] or now.cycles != anchor.get("cycles", {}):
            wrong = sorted(c for c in set(anchor.get("cycles", {})) | set(now.cycles)
                           if anchor.get("cycles", {}).get(c) != now.cycles.get(c))
            result.disagreeing = anchor
            result.reason = ("the global head differs" + (f" (programme cycles: {', '.join(wrong)})" if wrong else ""))
            return result
        result.latest = anchor
    return result


def write_after(conn: psycopg.Connection[Any], *, kind: str, reference: str) -> dict[str, Any] | None:
    """:func:`write` after a finished run: the run's own work is committed, so a failure to anchor
    is logged and counted (``AuditAnchorFailed``, alarmed) rather than failing the run; the next
    run's anchor covers the same rows."""
    from smartpay.observability import metrics

    try:
        return write(conn, kind=kind, reference=reference)
    except Exception:
        logger.exception("audit anchor not written", extra={"kind": kind, "reference": reference})
        metrics.add_metric(name="AuditAnchorFailed", unit="Count", value=1)
        return None


def latest_verified(conn: psycopg.Connection[Any], anchors: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest anchor that agrees with the heads recomputed now, walking back from the newest
    (an edit to any row it covers changes that voucher's later hashes, so one anchor that agrees
    vouches for every row up to it), and how many newer ones disagree."""
    newer_disagreeing = 0
    for anchor in reversed(anchors):
        now = heads(conn, int(anchor["upto_event_id"]))
        if now.global_head == anchor["global"] and now.cycles == anchor.get("cycles", {}):
            return {"configured": True, "anchors": len(anchors), "newer_disagreeing": newer_disagreeing,
                    "latest_verified": {k: anchor[k] for k in ("key", "upto_event_id", "written_at", "global")}
                    | {"cycles": anchor.get("cycles", {})}}
        newer_disagreeing += 1
    return {"configured": True, "anchors": len(anchors), "newer_disagreeing": newer_disagreeing,
            "latest_verified": None}
