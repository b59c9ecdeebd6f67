"""Audit rows written by the database (migration 0016), A/B against the code before it, in one run.

The machine is shared: two benchmark runs an hour apart differ by more than 5 % from load alone.
Here the two trees' own benchmarks run alternately (ABBA…) in one run, so load falls on both
alike: ``--old`` is a checkout of the code before the change (e.g. ``git archive <commit> | tar -x
-C /tmp/old``), the other side is this tree. Each round runs, per side, ``disburse_batch.py``
(``ratio_to_wire`` of a batch of ``--vouchers``) and ``webhook_receipt.py`` (fresh p50 of
``--events``), each in its own process and database; the figures are their final JSON lines.

Prints each run, then the medians per side and new / old against the 5 % limit, and one JSON line.

    python benchmarks/audit_trigger_ab.py --old /tmp/old [--rounds 4] [--vouchers 5000] [--events 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

NEW = Path(__file__).resolve().parents[1]


def run(tree: Path, script: str, args: list[str]) -> dict:
    """One benchmark of ``tree`` in its own process; its last JSON line."""
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=900, cwd=tree, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode != 0:
        raise RuntimeError(f"{tree}/{script} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("{"))
    return json.loads(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the tree before the change")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; sides alternate ABBA")
    parser.add_argument("--vouchers", type=int, default=5000, help="the batch's vouchers")
    parser.add_argument("--events", type=int, default=2000, help="the webhook benchmark's fresh events")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": NEW}
    ratio: dict[str, list[float]] = {"old": [], "new": []}
    p50: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(args.rounds):
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
    for name, figures in (("ratio_to_wire", ratio), ("webhook_fresh_p50_ms", p50)):
        old, new = statistics.median(figures["old"]), statistics.median(figures["new"])
        summary[name] = {"old": round(old, 3), "new": round(new, 3), "new_over_old": round(new / old, 3)}
        ok &= new / old <= 1.05
        print(f"  {name:22} old {old:7.3f}   new {new:7.3f}   new / old {new / old:5.3f}  "
              f"(limit 1.05: {'met' if new / old <= 1.05 else 'NOT met'})")
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
