"""The audit anchor's heads query at national scale, against the statement timeouts of the roles
that run it (the limit: it must finish well inside them, or a run's anchor is not written).

An anchor (smartpay/anchors.py) is written by the disburse function after a completed cycle run
(role ``smartpay_disburse``, statement_timeout 5 s) and by the reconcile function after each run
(``smartpay_reconcile``, 30 s). Its query reads every voucher's last audit hash. Here: ``--n``
vouchers of one cycle (default 300,000: a national pay day), each with two audit rows (issued,
active), then ``--cycles`` more such cycles already anchored before (default 0), and the heads
query timed ``--repeat`` times as each role.

    python benchmarks/anchor_heads.py [--n 300000] [--cycles 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import _common

DB = "smartpay_bench_anchor_heads"
AMOUNT = 140000
TIMEOUTS_S = {"smartpay_disburse": 5.0, "smartpay_reconcile": 30.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--cycles", type=int, default=0, help="earlier cycles of --n vouchers each")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import psycopg

    from smartpay import anchors
    from smartpay_tools.local.services import url_as

    url = _common.fresh_database(DB)
    try:
        started = time.monotonic()
        for k in range(args.cycles):
            _common.active_vouchers(url, args.n, f"2026-{k + 1:02d}", first=k * args.n, amount=AMOUNT)
        _common.active_vouchers(url, args.n, "2026-11", first=args.cycles * args.n, amount=AMOUNT)
        with psycopg.connect(url) as conn:
            events, = conn.execute("SELECT count(*) FROM voucher_events").fetchone()
            upto, = conn.execute("SELECT max(id) FROM voucher_events").fetchone()
        print(f"seeded {(args.cycles + 1) * args.n:,} vouchers, {events:,} audit rows in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        figures: dict[str, float] = {}
        for role, limit in TIMEOUTS_S.items():
            times = []
            with psycopg.connect(url_as(url, role)) as conn:
                for _ in range(args.repeat):
                    t0 = time.monotonic()
                    heads = anchors.heads(conn, upto)
                    times.append(time.monotonic() - t0)
                    conn.rollback()
            figures[role] = statistics.median(times)
            print(f"  heads as {role:20s} median {figures[role]:6.2f} s of its {limit:.0f} s statement timeout "
                  f"({figures[role] / limit:.2f}); {len(heads.cycles)} cycle head(s)", flush=True)
        print(json.dumps({"vouchers": (args.cycles + 1) * args.n, "audit_rows": events,
                          "disburse_heads_s": round(figures["smartpay_disburse"], 2),
                          "reconcile_heads_s": round(figures["smartpay_reconcile"], 2),
                          "disburse_timeout_s": TIMEOUTS_S["smartpay_disburse"],
                          "reconcile_timeout_s": TIMEOUTS_S["smartpay_reconcile"],
                          "load_average": [round(x, 2) for x in os.getloadavg()]}))
        return 0 if all(figures[r] < TIMEOUTS_S[r] for r in TIMEOUTS_S) else 1
    finally:
        _common.drop(DB)


if __name__ == "__main__":
    sys.exit(main())
