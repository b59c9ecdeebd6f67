"""Data access for the disburse function: every SQL statement it runs lives here."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import tuple_row

from smartpay.observability import logger
from smartpay.transitions import Change, TransitionResult, transition_many

_VOUCHER = """v.id, v.beneficiary_id, v.programme, v.cycle, v.amount_cents, v.currency, v.status,
              v.buffr_delivery_id, v.failure_reason, v.review_reason, v.issued_at, v.expires_at,
              v.status_changed_at, v.version"""


def get(conn: psycopg.Connection[Any], voucher_id: str) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {_VOUCHER} FROM vouchers v WHERE v.id = %s", (voucher_id,)).fetchone()


def history(conn: psycopg.Connection[Any], voucher_id: str) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT from_status, to_status, source, reference, detail, at
             FROM voucher_events WHERE voucher_id = %s ORDER BY id""",
        (voucher_id,),
    ).fetchall()


_SENDABLE = """SELECT v.id::text, v.amount_cents, v.currency, b.id_number
                 FROM vouchers v JOIN beneficiaries b ON b.id = v.beneficiary_id"""


def sendable(conn: psycopg.Connection[Any], voucher_ids: list[str]) -> list[tuple[str, int, str, str]]:
    """What Buffr needs for each of these vouchers that exists (amount, currency and ID number never
    change once issued, so reading them before the claim is reading them at the claim)."""
    return conn.cursor(row_factory=tuple_row).execute(
        f"{_SENDABLE} WHERE v.id = ANY(%s::uuid[])", (voucher_ids,)).fetchall()


def settle_and_claim(conn: psycopg.Connection[Any], settle: list[Change], voucher_ids: list[str],
                     reference: str) -> tuple[list[TransitionResult], list[str], list[TransitionResult]]:
    """One batch turn: record Buffr's answers (``settle``) and move issued vouchers to pending.

    Both go through one :func:`transition_many`: one statement, one round trip, atomic on its
    own (the batch's connection is in autocommit), retried once after a deadlock or lock
    timeout. Pending vouchers are claimed as they are (retried). Returns the settle results (in
    order), the claimed voucher ids (in order), and the results of those that cannot be sent
    (already past pending, or unknown).
    """
    changes = [*settle, *(Change(v, "pending") for v in voucher_ids)]
    try:
        results = transition_many(conn, changes, source="disburse", reference=reference)
    except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
            psycopg.errors.LockNotAvailable) as exc:
        # On an autocommit connection the failed statement left nothing behind, so it is run
        # once more rather than losing the turn (and the answers in it) to a deadlock victim
        # or a lock timeout; a second failure goes up (503, the vouchers stay pending).
        if not conn.autocommit:
            raise
        logger.warning("batch turn retried", extra={"error": type(exc).__name__, "changes": len(changes)})
        results = transition_many(conn, changes, source="disburse", reference=reference)
    settled, claimed, refused = results[:len(settle)], [], []
    for r in results[len(settle):]:
        # applied issued/held → pending, or pending as it was (re-sent); an ineligible beneficiary's
        # voucher was redirected (held, cancelled) or left pending, and is not sent.
        if r.ineligible is None and r.to_status == "pending" and r.outcome in ("applied", "duplicate"):
            claimed.append(r.voucher_id)
        else:
            refused.append(r)
    return settled, claimed, refused
