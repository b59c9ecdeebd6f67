"""What the audit hash chain costs the writers, A/B in one run (the limit: at most 5 %).

Two throwaway databases on the same server: ``plain`` (the chain's trigger dropped: no chain)
and ``chained`` (all migrations: the BEFORE INSERT trigger hashes each audit row). Rounds
alternate between them (ABAB…, the order flipped every round), so load from other work on the
machine falls on both alike. Each round, on fresh vouchers of each database:

* batch turns — :func:`transition_many` issued → pending, then pending → active, ``--turn``
  vouchers per statement (what the batch disburse does per turn);
* single transitions — one transaction per voucher, active → redeemed (what a webhook does).

Prints the median per voucher of each kind, for both databases, and chained / plain (limit 1.05).
Then ``smartpay audit verify``'s own speed (Python recomputation) over the chained database.

    python benchmarks/audit_chain.py [--rounds 6] [--turn 500] [--singles 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import _common
import psycopg

from smartpay import audit_chain
from smartpay.transitions import Change, transition, transition_many
from smartpay_tools.data import bulk_seed


def chain_database(name: str, chained: bool) -> str:
    """A migrated database; ``plain`` has the chain's trigger dropped (and ``hash`` left empty):
    exactly the writers' work before migration 0012."""
    url = _common.fresh_database(name)
    if not chained:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER voucher_events_chain ON voucher_events")
            conn.execute("ALTER TABLE voucher_events ALTER COLUMN hash DROP NOT NULL")
    return url


def ratio_line(label: str, plain: float, chained: float, unit: str) -> bool:
    """One side-by-side line, chained / plain against the 5 % limit; True when within it."""
    ratio = chained / plain
    print(f"  {label:34} plain {plain:9.2f} {unit}   chained {chained:9.2f} {unit}   chained / plain {ratio:5.3f}  "
          f"(limit 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
    return ratio <= 1.05


def _seed(conn: psycopg.Connection, count: int) -> list[str]:
    with conn.transaction():
        ids = bulk_seed.issued_vouchers(conn, count, cycle="2026-11", reference="bench")
        bulk_seed.running_run(conn, ids, cycle="2026-11")  # only a run's vouchers are claimed
    conn.execute("VACUUM ANALYZE")
    return ids


def _round(conn: psycopg.Connection, ids: list[str], turn: int, singles: int,
           detail: Any = None) -> tuple[float, float]:
    """Microseconds per voucher: batch turns (two per voucher), single transitions; ``detail(v)``:
    each batch change's audit detail (None: none)."""
    batch_s = 0.0
    for target in ("pending", "active"):
        for start in range(0, len(ids), turn):
            chunk = [Change(v, target, detail=detail(v) if detail else None) for v in ids[start:start + turn]]
            t0 = time.perf_counter()
            with conn.transaction():
                results = transition_many(conn, chunk, source="disburse", reference="bench")
            batch_s += time.perf_counter() - t0
            assert all(r.applied for r in results)
    single_s = 0.0
    for v in ids[:singles]:
        t0 = time.perf_counter()
        with conn.transaction():
            assert transition(conn, v, "redeemed", source="webhook", reference="bench").applied
        single_s += time.perf_counter() - t0
    return batch_s / (2 * len(ids)) * 1e6, single_s / singles * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--turn", type=int, default=500)
    parser.add_argument("--per-round", type=int, default=2000, help="vouchers per round and database")
    parser.add_argument("--singles", type=int, default=200)
    args = parser.parse_args()
    names = {"plain": "smartpay_bench_chain_plain", "chained": "smartpay_bench_chain_on"}
    urls = {kind: chain_database(name, kind == "chained") for kind, name in names.items()}
    times: dict[str, dict[str, list[float]]] = {k: {"batch": [], "single": []} for k in names}
    try:
        conns = {k: psycopg.connect(u, autocommit=True) for k, u in urls.items()}
        ids = {k: _seed(c, args.rounds * args.per_round) for k, c in conns.items()}
        for r in range(args.rounds):
            order = ("plain", "chained") if r % 2 == 0 else ("chained", "plain")
            for kind in order:
                chunk = ids[kind][r * args.per_round:(r + 1) * args.per_round]
                batch, single = _round(conns[kind], chunk, args.turn, args.singles)
                times[kind]["batch"].append(batch)
                times[kind]["single"].append(single)
        print(f"audit hash chain, A/B over {args.rounds} alternating rounds, {args.per_round} vouchers per round, "
              f"{args.turn} per batch statement:")
        ok = True
        for what, label in (("batch", "batch turn, per voucher"), ("single", "single transition")):
            plain = statistics.median(times["plain"][what])
            chained = statistics.median(times["chained"][what])
            ok &= ratio_line(label, plain, chained, "us")
        started = time.perf_counter()
        result = audit_chain.verify(conns["chained"])
        elapsed = time.perf_counter() - started
        print(f"  audit verify (Python): {result.events:,} rows of {result.vouchers:,} vouchers in {elapsed:.2f} s "
              f"= {result.events / elapsed:,.0f} rows/s; {'ok' if result.ok else result.broken}")
        for c in conns.values():
            c.close()
    finally:
        for name in names.values():
            _common.drop(name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
