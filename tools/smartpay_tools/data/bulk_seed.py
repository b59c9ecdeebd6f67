"""Many issued vouchers in one statement: the set-up of benchmarks and tests, not a data path.

Each of ``n`` new active beneficiaries of ``programme`` gets one voucher for ``cycle``, born
``issued`` with its audit row (the database accepts nothing else), as the payroll import leaves
them. ID numbers run ``first``, ``first + 1`` … (11 digits), so callers sharing a database keep
theirs apart. Real imports go through :mod:`.payroll_import` (validation, rejections, issuance).
"""

from __future__ import annotations

from typing import Any

from smartpay_tools.data.datagen import PROGRAMMES

_SEED = """
WITH b AS (
    INSERT INTO beneficiaries (id_number, first_name, last_name, msisdn, region, programme)
    SELECT lpad(i::text, 11, '0'), 'Ndapewa', 'Nangolo', '+26481' || lpad((i %% 10000000)::text, 7, '0'),
           (ARRAY['Oshana', 'Khomas', 'Kavango East'])[1 + i %% 3], %(programme)s
      FROM generate_series(%(first)s::bigint, %(first)s::bigint + %(n)s - 1) AS i
    RETURNING id),
ctx AS MATERIALIZED (  -- the 'issued' audit rows the database writes
    SELECT set_config('smartpay.source', 'operator', true), set_config('smartpay.reference', %(reference)s, true)),
v AS (
    INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at)
    SELECT id, %(programme)s, %(cycle)s, %(amount)s, now() + interval '30 days' FROM b, ctx
    RETURNING id)
SELECT id AS voucher_id FROM v
"""


def issued_vouchers(conn: Any, n: int, *, cycle: str, programme: str = "old_age", first: int = 1,
                    reference: str = "seed") -> list[str]:
    """The ids of ``n`` new issued vouchers (one statement on ``conn``; the caller commits)."""
    rows = conn.execute(_SEED, {"n": n, "first": first, "programme": programme, "cycle": cycle,
                                "amount": PROGRAMMES[programme][1], "reference": reference}).fetchall()
    return [str(r["voucher_id"] if isinstance(r, dict) else r[0]) for r in rows]
