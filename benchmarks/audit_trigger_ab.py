"""Audit rows written by the database (migration 0016), A/B against the code before it, in one run.

The machine is shared: two benchmark runs an hour apart differ by more than 5 % from load alone.
Here the two trees' own benchmarks run alternately (ABBA…) in one run, so load falls on both
alike: ``--old`` is a checkout of the code before the change (e.g. ``git archive <commit> | tar -x
-C /tmp/old``), the other side is this tree. Each round runs, per side, ``disburse_batch.py``
(``ratio_to_wire`` of a batch of ``--vouchers``) and ``webhook_receipt.py`` (fresh p50 of
``--events``), each in its own process and database; the figures are their final JSON lines.
Then the audit's own cost, in this process: each tree's ``transition_many`` (batch turns of 500
with a detail per voucher) and ``transition`` (one transaction each) on a database migrated by
that tree, alternating (ABAB…), microseconds per voucher.

Like for like: this tree's pool sends no server-side prepared statements (they pin a session
behind RDS Proxy), so the old tree's pool must not either, or the A/B measures the prepares, not
the audit; its transitions then run unprepared as they would behind the proxy. Prepare the old
tree so (f92e7c4 is the code before the audit rows moved into the database):

    git archive f92e7c4 | tar -x -C /tmp/old
    sed -i 's|"options": f"-c statement_timeout|"prepare_threshold": None, "options": f"-c statement_timeout|' \
        /tmp/old/layers/core/smartpay/db.py

Prints each run, then the medians per side and new / old against the 5 % limit, and one JSON line.

    python benchmarks/audit_trigger_ab.py --old /tmp/old [--rounds 4] [--vouchers 5000] [--events 2000]
    python benchmarks/run_all.py --only audit_trigger_ab --extra "--old /tmp/old --rounds 8 --vouchers 10000 --events 1000 --only processes"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

NEW = Path(__file__).resolve().parents[1]


def run(tree: Path, script: str, args: list[str]) -> dict:
    """One benchmark of ``tree`` in its own process; its last JSON line."""
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=900, cwd=tree, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode != 0:
        raise RuntimeError(f"{tree}/{script} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("{"))
    return json.loads(line)


_SEED = """
from smartpay import migrate
from smartpay_tools.data import bulk_seed
import psycopg, sys
migrate.apply(sys.argv[1])
with psycopg.connect(sys.argv[1], options="-c smartpay.source=operator") as conn:
    ids = bulk_seed.issued_vouchers(conn, int(sys.argv[2]), cycle="2026-11")
    if hasattr(bulk_seed, "running_run"):  # a tree with the one door: only a run's vouchers are claimed
        bulk_seed.running_run(conn, ids, cycle="2026-11")
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
"""


def _transitions(tree: Path, side: str) -> Any:
    """That tree's smartpay.transitions, loaded under its own name beside this one."""
    spec = importlib.util.spec_from_file_location(f"transitions_{side}", tree / "layers/core/smartpay/transitions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def statements_ab(trees: dict[str, Path], rounds: int, per_round: int = 2000, turn: int = 500,
                  singles: int = 300) -> dict[str, dict[str, list[float]]]:
    """Per voucher (us): batch turns and single transitions of each tree on its own database."""
    import psycopg

    from smartpay_tools.local.services import drop_database, ensure_database

    urls, conns, ids, mods = {}, {}, {}, {}
    times: dict[str, dict[str, list[float]]] = {"batch": {k: [] for k in trees}, "single": {k: [] for k in trees}}
    try:
        for side, tree in trees.items():
            name = f"smartpay_bench_ab16_statements_{side}"
            drop_database(_common.ADMIN_URL, name)
            urls[side] = ensure_database(_common.ADMIN_URL, name)
            subprocess.run([sys.executable, "-c", _SEED, urls[side], str(rounds * per_round)], check=True,
                           env={**os.environ, "PYTHONPATH": f"{tree}/layers/core:{tree}/tools"})
            conns[side] = psycopg.connect(urls[side], autocommit=True)
            ids[side] = [r[0] for r in conns[side].execute("SELECT id::text FROM vouchers ORDER BY id")]
            mods[side] = _transitions(tree, side)
        for r in range(rounds):
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                t, conn, chunk = mods[side], conns[side], ids[side][r * per_round:(r + 1) * per_round]
                spent = 0.0
                for target in ("pending", "active"):
                    for start in range(0, len(chunk), turn):
                        changes = [t.Change(v, target, detail={"delivery_id": f"dlv_{v[:8]}", "attempts": 1})
                                   for v in chunk[start:start + turn]]
                        t0 = time.perf_counter()
                        with conn.transaction():
                            assert all(x.applied for x in t.transition_many(conn, changes, source="disburse",
                                                                            reference="bench"))
                        spent += time.perf_counter() - t0
                times["batch"][side].append(spent / (2 * len(chunk)) * 1e6)
                spent = 0.0
                for v in chunk[:singles]:
                    t0 = time.perf_counter()
                    with conn.transaction():
                        assert t.transition(conn, v, "redeemed", source="webhook", reference="bench",
                                            detail={"type": "voucher.redeemed"}).applied
                    spent += time.perf_counter() - t0
                times["single"][side].append(spent / singles * 1e6)
    finally:
        for conn in conns.values():
            conn.close()
        for side in trees:
            drop_database(_common.ADMIN_URL, f"smartpay_bench_ab16_statements_{side}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the tree before the change")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; sides alternate ABBA")
    parser.add_argument("--vouchers", type=int, default=5000, help="the batch's vouchers")
    parser.add_argument("--events", type=int, default=2000, help="the webhook benchmark's fresh events")
    parser.add_argument("--only", choices=("processes", "statements"), help="run one half only")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": NEW}
    ratio: dict[str, list[float]] = {"old": [], "new": []}
    p50: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(args.rounds if args.only != "statements" else 0):
        for side in (("old", "new") if r % 4 in (0, 3) else ("new", "old")):
            batch = run(trees[side], "disburse_batch.py", ["--vouchers", str(args.vouchers),
                                                           "--database-name", f"smartpay_bench_ab16_{side}"])
            hook = run(trees[side], "webhook_receipt.py", ["--count", str(args.events)])
            ratio[side].append(batch["ratio_to_wire"])
            p50[side].append(hook["fresh_p50_ms"])
            line = {"benchmark": "audit_trigger_ab", "round": r, "side": side, "ratio_to_wire": batch["ratio_to_wire"],
                    "batch_elapsed_s": batch["elapsed_s"], "wire_s": batch["wire_s"],
                    "webhook_fresh_p50_ms": hook["fresh_p50_ms"], "webhook_fresh_p99_ms": hook["fresh_p99_ms"],
                    "load_average": [round(x, 2) for x in os.getloadavg()]}
            print(json.dumps(line), flush=True)
    summary = {"benchmark": "audit_trigger_ab", "rounds": args.rounds, "vouchers": args.vouchers,
               "events": args.events}
    ok = True
    figures_by_name = {"ratio_to_wire": ratio, "webhook_fresh_p50_ms": p50} if args.only != "statements" else {}
    if args.only != "processes":
        statements = statements_ab(trees, args.rounds)
        figures_by_name |= {"batch_turn_us_per_voucher": statements["batch"],
                            "single_transition_us": statements["single"]}
    for name, figures in figures_by_name.items():
        old, new = statistics.median(figures["old"]), statistics.median(figures["new"])
        summary[name] = {"old": round(old, 3), "new": round(new, 3), "new_over_old": round(new / old, 3)}
        ok &= new / old <= 1.05
        print(f"  {name:22} old {old:7.3f}   new {new:7.3f}   new / old {new / old:5.3f}  "
              f"(limit 1.05: {'met' if new / old <= 1.05 else 'NOT met'})")
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
