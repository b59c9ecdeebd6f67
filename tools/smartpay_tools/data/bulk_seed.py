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


#: From awaiting approval to the status a seeded run is asked to be in: each move, and what it sets
#: besides the status (approval and cancellation by a principal other than the maker).
_RUN_PATH = {"awaiting_approval": [], "approved": ["approved"], "enqueuing": ["approved", "enqueuing"],
             "running": ["approved", "enqueuing", "running"], "paused": ["approved", "paused"],
             "completed": ["approved", "enqueuing", "running", "completed"],
             "cancelled": ["approved", "paused", "cancelled"]}
_MOVE_SETS = {"approved": ", checker_principal = 'seed-checker', checker_key_id = 'seed-checker-key', approved_at = now()",
              "completed": ", finished_at = now()",
              "cancelled": ", canceller_principal = 'seed-checker', canceller_key_id = 'seed-checker-key', "
                           "finished_at = now()"}
_ACTOR = "SELECT set_config('smartpay.actor', %s, true), set_config('smartpay.actor_key', %s || '-key', true)"


def running_run(conn: Any, voucher_ids: list[str], *, cycle: str, programme: str = "old_age",
                status: str = "running") -> str:
    """Put these vouchers in the programme cycle's open run, or in a new run of ``status`` (approved
    by another principal unless awaiting approval) when the cycle has none: a run approved,
    enqueuing or running lets the claim send them (migration 0014: only a run's vouchers are
    claimed). Returns the run id."""
    found = conn.execute(
        """SELECT id FROM cycle_runs WHERE programme = %s AND cycle = %s
              AND status IN ('awaiting_approval', 'approved', 'enqueuing', 'running', 'paused')""",
        (programme, cycle)).fetchone()
    if found is None:
        # Born awaiting approval (the database refuses anything else and writes each move's event,
        # naming the actor set here for this transaction: the maker, then the checker), then moved on to ``status``.
        with conn.transaction():
            conn.execute(_ACTOR, ("seed-maker", "seed-maker"))
            found = conn.execute(
                """INSERT INTO cycle_runs (programme, cycle, idempotency_key, fingerprint, voucher_count,
                                           total_amount_cents, chunk_size, maker_principal, maker_key_id, expires_at)
                   VALUES (%s, %s, 'seed-' || gen_random_uuid(), repeat('0', 64), 0, 0, 500, 'seed-maker',
                           'seed-maker-key', now() + interval '1 day')
                RETURNING id""", (programme, cycle)).fetchone()
            run_id = str(found["id"] if isinstance(found, dict) else found[0])
            conn.execute(_ACTOR, ("seed-checker", "seed-checker"))
            for step in _RUN_PATH[status]:
                conn.execute(f"UPDATE cycle_runs SET status = %s{_MOVE_SETS.get(step, '')} WHERE id = %s",
                             (step, run_id))
    run_id = str(found["id"] if isinstance(found, dict) else found[0])
    conn.execute("""INSERT INTO cycle_run_items (run_id, voucher_id, chunk_no)
                    SELECT %s, v, 0 FROM unnest(%s::uuid[]) AS v ON CONFLICT DO NOTHING""",
                 (run_id, [str(v) for v in voucher_ids]))
    return run_id
