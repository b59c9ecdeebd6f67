"""Named leases: one holder at a time for a shard split or a chunk, without pinning a session.

A session-level advisory lock pins the client's connection behind RDS Proxy (the proxy then
stops multiplexing it). A lease is a row in ``smartpay_leases`` (migration 0017) taken by one
autocommit statement and released by another; a killed holder's lease lapses at its expiry,
which is the holder's own deadline plus :data:`MARGIN_S`, so it never lapses under a live one.
"""

from __future__ import annotations

from typing import Any

import psycopg

#: Seconds a lease outlives its holder's deadline (clock skew between Lambda and the database).
MARGIN_S = 5.0


def ttl_for(context: Any, default_s: float) -> float:
    """The lease's lifetime: the invocation's remaining time plus the margin (``default_s``
    when there is no Lambda context, e.g. a direct call from a tool)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    base = remaining() / 1000 if callable(remaining) else default_s
    return max(base, 1.0) + MARGIN_S


def acquire(conn: psycopg.Connection[Any], name: str, ttl_s: float) -> str | None:
    """The holder token if ``name`` was free (or its lease had expired); None if someone holds it."""
    row = conn.execute(
        """INSERT INTO smartpay_leases (name, holder, expires_at)
           VALUES (%s, gen_random_uuid(), now() + make_interval(secs => %s))
           ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
                                            taken_at = now()
            WHERE smartpay_leases.expires_at <= now()
        RETURNING holder::text AS holder""", (name, ttl_s)).fetchone()
    if row is None:
        return None
    return str(row["holder"] if isinstance(row, dict) else row[0])


def release(conn: psycopg.Connection[Any], name: str, holder: str) -> None:
    """Give the lease back (only the holder's own: an expired and re-taken one stays taken)."""
    conn.execute("DELETE FROM smartpay_leases WHERE name = %s AND holder = %s", (name, holder))
