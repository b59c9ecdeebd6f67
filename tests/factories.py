"""Arrange database state for tests (direct SQL, so tests do not depend on the code under test)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

_rng = random.Random(7)


def id_number() -> str:
    return f"{_rng.randrange(10**10, 10**11):011d}"


def beneficiary(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    row = {
        "id_number": id_number(),
        "first_name": "Ndapewa",
        "last_name": "Nangolo",
        "msisdn": f"+26481{_rng.randrange(10**7):07d}",
        "region": "Oshana",
        "programme": "old_age",
        "status": "active",
        **overrides,
    }
    created = conn.execute(
        """INSERT INTO beneficiaries (id_number, first_name, last_name, msisdn, region, programme, status)
           VALUES (%(id_number)s, %(first_name)s, %(last_name)s, %(msisdn)s, %(region)s, %(programme)s,
                   %(status)s) RETURNING id""",
        row,
    ).fetchone()
    row["id"] = str(created["id"] if isinstance(created, dict) else created[0])
    return row


def voucher(conn: psycopg.Connection[Any], beneficiary_id: str, *, claimable: bool = False,
            **overrides: Any) -> dict[str, Any]:
    """A voucher in ``status`` (default issued); ``claimable``: in the cycle's run under way (:func:`in_run`)."""
    row = {
        "id": str(uuid.uuid4()),
        "beneficiary_id": beneficiary_id,
        "programme": "old_age",
        "cycle": "2026-11",
        "amount_cents": 140000,
        "status": "issued",
        **overrides,
    }
    # Born issued (the database refuses anything else), then moved straight on to the status
    # asked for: the lifecycle allows any forward jump, which is all the trigger checks.
    conn.execute(
        """INSERT INTO vouchers (id, beneficiary_id, programme, cycle, amount_cents, expires_at)
           VALUES (%(id)s, %(beneficiary_id)s, %(programme)s, %(cycle)s, %(amount_cents)s,
                   now() + interval '30 days')""",
        row,
    )
    if claimable or row["status"] == "pending":  # only a voucher of a run under way is claimed (0014)
        in_run(conn, [row["id"]], programme=row["programme"], cycle=row["cycle"])
    if row["status"] != "issued":
        conn.execute("UPDATE vouchers SET status = %(status)s WHERE id = %(id)s", row)
    return row


def in_run(conn: psycopg.Connection[Any], voucher_ids: list[str], *, programme: str = "old_age",
           cycle: str = "2026-11", status: str = "running") -> str:
    """Put these vouchers in the cycle's run under way (:func:`bulk_seed.running_run`), so they may
    be claimed. Returns the run id."""
    from smartpay_tools.data import bulk_seed

    return bulk_seed.running_run(conn, voucher_ids, cycle=cycle, programme=programme, status=status)


@contextmanager
def acting_as(conn: psycopg.Connection[Any], principal: str = "operator") -> Iterator[psycopg.Connection[Any]]:
    """A transaction whose cycle run moves name ``principal`` (key ``<principal>-key``): the database
    writes each move's event from it and refuses a move by no one (migration 0016)."""
    with conn.transaction():
        conn.execute("SELECT set_config('smartpay.actor', %s, true), set_config('smartpay.actor_key', %s, true)",
                     (principal, f"{principal}-key"))
        yield conn


def count(conn: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row["count"] if isinstance(row, dict) else row[0])
