"""What the transition functions save, A/B in one run: the statement sent as it is (parsed and
planned by the server on every call) against a call of the PL/pgSQL function migrate generates
from it (its plan kept for the session by the server).

One throwaway migrated database; every connection as the function's own role with
``prepare_threshold=None``, as the pool connects (no server-side prepared statement: nothing
pinned behind RDS Proxy). Arms, each on its own two connections, rounds alternating (the order
rotated every round, so load from other work on the machine falls on all alike):

* ``statement`` — the functions' statement sent as it is, with the same parameters;
* ``function`` — :func:`transition_many` as it is (a call of the generated function);
* ``function, custom plans`` — the same with ``plan_cache_mode = force_custom_plan`` for the
  session: whether the generic plan PL/pgSQL may switch to after five calls costs big batches.
  (The setting holds for everything the call runs, as it would as a ``SET`` clause of the
  function: the vouchers triggers' statements too, then planned again for every row.)

Each round, on fresh vouchers per arm: batch turns as smartpay_disburse (issued → pending,
``--turn`` vouchers per statement, vouchers of a running run) and single transitions as
smartpay_webhook (active → redeemed, one transaction each). Prints the median over rounds of
the time per batch turn and per single transition, and each against the statement.

    python benchmarks/transition_function_ab.py [--rounds 6] [--turn 500] [--batch 2000] [--singles 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import _common
import psycopg

from smartpay import lifecycle, transitions
from smartpay.transitions import Change, transition, transition_many
from smartpay_tools.data import bulk_seed

ARMS = ("statement", "function", "function, custom plans")
CYCLE = "2026-11"


def statement_calls() -> dict[bool, str]:
    """The functions' statement with the call's parameters in place of the function's: what the
    server parses and plans per call when it is sent as it is."""
    calls = {}
    for paying in (False, True):
        body = transitions._statement(lifecycle.decision_table(), eligibility=paying).replace("%", "%%")
        for number, parameter in enumerate(("%(changes)s::jsonb", "%(ids)s::uuid[]", "%(source)s",
                                            "%(reference)s::text"), start=1):
            body = body.replace(f"${number}", parameter)
        calls[paying] = body
    return calls


def _seed(url: str, batch: int, singles: int) -> tuple[list[str], list[str]]:
    """Issued vouchers of a running run (for the batch turns) and active ones (for the singles)."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            claims = bulk_seed.issued_vouchers(conn, batch, cycle=CYCLE, reference="bench")
            actives = bulk_seed.issued_vouchers(conn, singles, cycle=CYCLE, first=10_000_000, reference="bench")
        bulk_seed.running_run(conn, claims, cycle=CYCLE)
        for start in range(0, len(actives), 500):
            with conn.transaction():
                transition_many(conn, [Change(v, "active") for v in actives[start:start + 500]],
                                source="operator", reference="bench")
        conn.execute("VACUUM ANALYZE")
    return claims, actives


def _round(disburse: psycopg.Connection, webhook: psycopg.Connection, claims: list[str], actives: list[str],
           turn: int) -> tuple[float, float]:
    """Microseconds per batch turn (as disburse) and per single transition (as webhook)."""
    turns = []
    for start in range(0, len(claims), turn):
        chunk = [Change(v, "pending") for v in claims[start:start + turn]]
        t0 = time.perf_counter()
        with disburse.transaction():
            results = transition_many(disburse, chunk, source="disburse", reference="bench")
        turns.append(time.perf_counter() - t0)
        assert all(r.applied for r in results), {r.outcome for r in results}
    singles = []
    for v in actives:
        t0 = time.perf_counter()
        with webhook.transaction():
            assert transition(webhook, v, "redeemed", source="webhook", reference="bench").applied
        singles.append(time.perf_counter() - t0)
    return statistics.median(turns) * 1e6, statistics.median(singles) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--turn", type=int, default=500)
    parser.add_argument("--batch", type=int, default=2000, help="vouchers per round and arm for the batch turns")
    parser.add_argument("--singles", type=int, default=300, help="single transitions per round and arm")
    args = parser.parse_args()
    name = "smartpay_bench_transition_fn"
    url = _common.fresh_database(name)
    function_calls, old_calls = dict(transitions._CALLS), statement_calls()
    times: dict[str, dict[str, list[float]]] = {arm: {"batch": [], "single": []} for arm in ARMS}
    try:
        claims, actives = _seed(url, args.rounds * len(ARMS) * args.batch, args.rounds * len(ARMS) * args.singles)
        conns: dict[str, dict[str, Any]] = {}
        for arm in ARMS:
            conns[arm] = {role: psycopg.connect(url, user=f"smartpay_{role}", prepare_threshold=None, autocommit=True)
                          for role in ("disburse", "webhook")}
            if arm.endswith("custom plans"):
                for conn in conns[arm].values():
                    conn.execute("SET plan_cache_mode = force_custom_plan")
        for r in range(args.rounds):
            for k in range(len(ARMS)):
                arm = ARMS[(r + k) % len(ARMS)]
                i = r * len(ARMS) + ARMS.index(arm)
                transitions._CALLS = old_calls if arm == "statement" else function_calls
                batch, single = _round(conns[arm]["disburse"], conns[arm]["webhook"],
                                       claims[i * args.batch:(i + 1) * args.batch],
                                       actives[i * args.singles:(i + 1) * args.singles], args.turn)
                times[arm]["batch"].append(batch)
                times[arm]["single"].append(single)
        transitions._CALLS = function_calls
        print(f"transition statement vs function, {args.rounds} rounds (arms rotated), prepare_threshold=None; "
              f"medians over rounds of each round's median:")
        base = {what: statistics.median(times["statement"][what]) for what in ("batch", "single")}
        for what, label in (("batch", f"batch turn of {args.turn} as smartpay_disburse"),
                            ("single", "single transition as smartpay_webhook")):
            for arm in ARMS:
                value = statistics.median(times[arm][what])
                rounds = " ".join(f"{t:.0f}" for t in times[arm][what])
                print(f"  {label:42} {arm:24} {value:10.0f} us  / statement {value / base[what]:5.3f}  "
                      f"(rounds: {rounds})")
        for arm in conns.values():
            for conn in arm.values():
                conn.close()
    finally:
        transitions._CALLS = function_calls
        _common.drop(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
