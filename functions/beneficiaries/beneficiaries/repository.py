"""Data access for the beneficiaries function (read-only)."""

from __future__ import annotations

from typing import Any

from smartpay.db import connection

_COLUMNS = "id, id_number, first_name, last_name, msisdn, region, programme, status"


def by_id(beneficiary_id: str) -> dict[str, Any] | None:
    with connection() as conn:
        return conn.execute(f"SELECT {_COLUMNS} FROM beneficiaries WHERE id = %s", (beneficiary_id,)).fetchone()


def by_id_number(id_number: str) -> dict[str, Any] | None:
    with connection() as conn:
        return conn.execute(
            f"SELECT {_COLUMNS} FROM beneficiaries WHERE id_number = %s", (id_number,)
        ).fetchone()


def open_vouchers(beneficiary_id: str) -> list[dict[str, Any]]:
    with connection() as conn:
        return conn.execute(
            """SELECT id, programme, cycle, amount_cents, currency, status, expires_at
                 FROM vouchers
                WHERE beneficiary_id = %s AND status IN ('issued', 'pending', 'active')
                ORDER BY issued_at""",
            (beneficiary_id,),
        ).fetchall()
