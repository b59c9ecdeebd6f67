"""Run every benchmark in turn (``make bench``): each prints its own figures and ratios.

Benchmarks are not tests: they assert nothing about wall time; they print what they measured
and the limits/baselines measured in the same run. Run them on a quiet machine.

    python benchmarks/run_all.py [--only cold_start,webhook_receipt] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: name -> (full arguments, --quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "cold_start": ([], ["--samples", "3"]),
    "webhook_receipt": ([], ["--count", "1000"]),
    "buffr_clients": ([], ["--n", "5000", "--rounds", "1"]),
    "disburse_batch": ([], ["--vouchers", "2000"]),
    "payroll_import": ([], ["30000"]),
    "reconcile": ([], ["--n", "20000", "--small", "5000", "--cycle", "0"]),
    "cycle_run": ([], ["--vouchers", "5000"]),
    "pay_day": ([], ["--quick"]),
    "audit_chain": ([], ["--rounds", "2", "--turn", "100", "--singles", "20"]),
    "audit_chain_ab": ([], ["--blocks", "2", "--block", "40", "--batch", "100"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the targets)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    failed = []
    for name in names:
        full, quick = BENCHMARKS[name]
        print(f"\n===== {name} =====", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)])
        print(f"----- {name}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
