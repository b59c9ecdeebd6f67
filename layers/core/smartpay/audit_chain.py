"""The audit trail's hash chains, recomputed independently of the database (``audit verify``).

Migration ``0012_audit_hash_chain.sql`` gives every ``voucher_events`` row
``hash = sha256(encoding(row, previous hash of the same voucher))``, written by a trigger.
This module re-derives each hash in Python from the plain column values — not by calling the
database's function — so an edit, a deletion or an insertion made with the append-only trigger
switched off (by someone holding the owner's rights) breaks the recomputed chain at that row.

A voucher's chain must also end in the voucher's current status: a status changed by hand, or
the last audit row deleted, is found even though no hash before it changed.

A *head* names a set of chains in one hash: sha256 over ``<voucher id>:<last hash hex>\\n`` of
each voucher in id order. The compliance report prints its programme cycle's head; an auditor
keeps it, and a later ``audit verify --programme P --cycle C --upto EVENT`` recomputes the head
over the same events and must print the same value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row

VERSION = b"smartpay-audit-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _field(value: str | None) -> bytes:
    if value is None:
        return b"-"
    data = value.encode()
    return str(len(data)).encode() + b":" + data


def encoding(prev: bytes | None, event_id: int, voucher_id: str, from_status: str | None, to_status: str,
             source: str, reference: str | None, detail: str | None, at: datetime) -> bytes:
    """The canonical bytes of one audit row (docs/database.md spells the format out)."""
    micros = (at - _EPOCH) // _MICROSECOND
    return b"|".join((VERSION, prev.hex().encode() if prev else b"", str(event_id).encode(),
                      voucher_id.lower().encode(), _field(from_status), _field(to_status), _field(source),
                      _field(reference), _field(detail), str(micros).encode()))


def row_hash(prev: bytes | None, *columns: Any) -> bytes:
    return hashlib.sha256(encoding(prev, *columns)).digest()


def head(chain_heads: Iterable[tuple[str, bytes]]) -> str:
    """One hash over many chains: their (voucher id, last hash) in voucher id order."""
    digest = hashlib.sha256(VERSION + b"|head")
    for voucher_id, last in sorted(chain_heads):
        digest.update(f"{voucher_id}:{last.hex()}\n".encode())
    return digest.hexdigest()


@dataclass
class Broken:
    """The first row (or voucher) where the recomputed trail disagrees with the stored one."""

    voucher_id: str
    event_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"voucher_events row {self.event_id}" if self.event_id is not None else "voucher"
        return f"{where} of voucher {self.voucher_id}: {self.reason}"


@dataclass
class Verification:
    vouchers: int = 0
    events: int = 0
    checked: int = 0  # rows whose hash was recomputed (all of them unless --since)
    head: str = ""
    broken: Broken | None = None
    last_event_id: int | None = None
    heads: list[tuple[str, bytes]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "vouchers": self.vouchers, "events": self.events, "checked": self.checked,
                "head": self.head, "last_event_id": self.last_event_id,
                "broken": None if self.broken is None else {
                    "voucher_id": self.broken.voucher_id, "event_id": self.broken.event_id,
                    "reason": self.broken.reason}}


_ROWS = """
SELECT v.id::text, v.status, e.id, e.from_status, e.to_status, e.source, e.reference, e.detail::text, e.at, e.hash
  FROM vouchers v
  LEFT JOIN voucher_events e ON e.voucher_id = v.id {upto}
 WHERE {where}
 ORDER BY v.id, e.id
"""


def _rows(conn: psycopg.Connection[Any], programme: str | None, cycle: str | None,
          upto: int | None) -> Iterator[tuple[Any, ...]]:
    where, params = ["true"], {}
    if programme is not None:
        where.append("v.programme = %(programme)s")
        params["programme"] = programme
    if cycle is not None:
        where.append("v.cycle = %(cycle)s")
        params["cycle"] = cycle
    sql = _ROWS.format(where=" AND ".join(where), upto="AND e.id <= %(upto)s" if upto is not None else "")
    if upto is not None:
        params["upto"] = upto
    # Rows streamed from a server-side cursor (never all in memory), in one snapshot; a caller that
    # already opened a transaction (the compliance report) chose its snapshot itself.
    outer = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if not outer:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = conn.cursor(name="audit_verify", row_factory=tuple_row)
        cur.itersize = 5000
        with cur:
            cur.execute(sql, params)
            yield from cur


def verify(conn: psycopg.Connection[Any], *, programme: str | None = None, cycle: str | None = None,
           since: datetime | None = None, upto: int | None = None) -> Verification:
    """Recompute every chain of the selected vouchers; stop at the first broken row.

    ``since``: only rows written at or after it are recomputed; each chain starts from the
    stored hash of its last row before ``since`` (an incremental check of recent writes).
    ``upto``: only rows with id ≤ ``upto`` count (the head as it was when a report was made);
    the end-of-chain status check is then skipped, since later rows may have moved the voucher on.
    """
    result = Verification()
    voucher: str | None = None
    status: str | None = None
    prev: bytes | None = None
    last_status: str | None = None

    def close_chain() -> Broken | None:
        if voucher is None:
            return None
        if prev is None:
            # as of ``upto`` a voucher without rows did not exist yet (it is born with its first row)
            return None if upto is not None else Broken(voucher, None, "voucher has no audit rows")
        result.heads.append((voucher, prev))
        if upto is None and last_status != status:
            return Broken(voucher, None, f"voucher status is {status!r} but its audit trail ends at {last_status!r}")
        return None

    for vid, vstatus, eid, from_status, to_status, source, reference, detail, at, stored in _rows(
            conn, programme, cycle, upto):
        if vid != voucher:
            result.broken = close_chain()
            if result.broken:
                return result
            voucher, status, prev, last_status = vid, vstatus, None, None
            result.vouchers += 1
        if eid is None:
            continue
        result.events += 1
        result.last_event_id = max(result.last_event_id or 0, eid)
        stored = bytes(stored)
        if since is not None and at < since:
            prev, last_status = stored, to_status  # trusted anchor before the window
            continue
        result.checked += 1
        expected = row_hash(prev, eid, vid, from_status, to_status, source, reference, detail, at)
        if expected != stored:
            result.broken = Broken(vid, eid, "hash does not match the row and its predecessor "
                                             "(edited, or a row before it deleted or inserted)")
            return result
        if last_status is not None and from_status != last_status:
            result.broken = Broken(vid, eid, f"from_status {from_status!r} does not follow the previous "
                                             f"row's to_status {last_status!r}")
            return result
        prev, last_status = stored, to_status
    result.broken = close_chain()
    if result.broken is None:
        result.head = head(result.heads)
    return result
