"""Payroll import rate: N payroll rows (default 300,000) into a fresh database, then a re-run.

Target: 300,000 rows in ≤ 60 s on the dev box. Prints rows/s and the ratio to target.
Usage: python benchmarks/payroll_import.py [ROWS] [--database-name NAME]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _common

from smartpay_tools.data import datagen, payroll_import

TARGET_S_PER_300K = 60.0


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="?", type=int, default=300_000)
    parser.add_argument("--database-name", default=f"smartpay_bench_payroll_{os.getpid()}",
                        help="the throwaway database (dropped before and after; one per concurrent run)")
    args = parser.parse_args()
    count, name = args.rows, args.database_name
    url = _common.fresh_database(name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "payroll.csv"
            started = time.perf_counter()
            rows = datagen.generate_payroll_file(path, int(count / 0.97) + 10, "2026-11")
            print(f"generated {rows} payroll rows in {time.perf_counter() - started:.1f}s (not timed below)")
            started = time.perf_counter()
            report = payroll_import.import_file(url, path)
            elapsed = time.perf_counter() - started
            print(f"import: {report.rows} rows, {report.vouchers_issued} vouchers issued, "
                  f"{report.beneficiaries_upserted} beneficiaries upserted, {len(report.rejected)} rejected "
                  f"in {elapsed:.1f}s = {report.rows / elapsed:,.0f} rows/s")
            budget = TARGET_S_PER_300K * report.rows / 300_000
            print(f"target: {budget:.1f}s for {report.rows} rows -> elapsed/target = {elapsed / budget:.2f} "
                  f"({'within' if elapsed <= budget else 'OVER'} target)")
            started = time.perf_counter()
            again = payroll_import.import_file(url, path)
            rerun = time.perf_counter() - started
            print(f"re-run: {again.vouchers_issued} issued, {again.already_issued} already issued "
                  f"in {rerun:.1f}s")
            print(json.dumps({"benchmark": "payroll_import", "rows": report.rows, "elapsed_s": round(elapsed, 1),
                              "rows_per_s": round(report.rows / elapsed), "target_s": round(budget, 1),
                              "ratio_to_target": round(elapsed / budget, 3), "rerun_s": round(rerun, 1),
                              "rerun_issued": again.vouchers_issued,
                              "load_average": [round(x, 2) for x in os.getloadavg()]}))
    finally:
        _common.drop(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
