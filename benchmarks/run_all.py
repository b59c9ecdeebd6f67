"""Run every benchmark in turn (``make bench``): each prints its own figures and ratios.

Benchmarks are not tests: they assert nothing about wall time; they print what they measured
and the limits/baselines measured in the same run. Run them on a quiet machine.

Each benchmark ends with one JSON line of its figures; this runner also writes those lines,
stamped with the benchmark's name, the time and the load average, to ``--out`` (default
``reports/bench-<UTC>.jsonl``), which ``benchmarks/table.py`` renders as docs/performance.md's table.

    python benchmarks/run_all.py [--only cold_start,webhook_receipt] [--quick] [--out FILE]
    python benchmarks/run_all.py --only pay_day --quick --extra "--faults 5xx=0.1,timeout=0.02"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
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
    "pay_day": (["--quick"], ["--vouchers", "2000"]),  # the national 300,000 runs alone: about an hour
    "anchor_heads": ([], ["--n", "30000"]),
    "audit_chain": ([], ["--rounds", "2", "--turn", "100", "--singles", "20"]),
    "audit_chain_ab": ([], ["--blocks", "2", "--block", "40", "--batch", "100"]),
    # A/B against an older tree: only when named, with --extra "--old DIR ..." (see its docstring)
    "audit_trigger_ab": ([], []),
}
NAMED_ONLY = {"audit_trigger_ab"}
SETTLE_S = 90.0  # at most this long for the 1-minute load to fall under half the cores before each


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the targets)")
    parser.add_argument("--extra", default="", help="more arguments for the one benchmark --only names "
                        "(e.g. --only pay_day --quick --extra '--faults 5xx=0.1,timeout=0.02')")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the JSON lines go (default reports/bench-<UTC>.jsonl)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else [n for n in BENCHMARKS if n not in NAMED_ONLY]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if args.extra and len(names) != 1:
        parser.error("--extra goes with exactly one benchmark in --only")
    out = args.out or HERE.parent / "reports" / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        full, quick = BENCHMARKS[name]
        print(f"\n===== {name} =====", flush=True)
        load_before = settle()
        started = time.monotonic()
        code, figures = _run(name, [*(quick if args.quick else full), *shlex.split(args.extra)])
        print(f"----- {name}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        with out.open("a") as handle:
            for record in figures:
                handle.write(json.dumps({"benchmark": name, **record, "quick": args.quick, "exit": code, "cpus": os.cpu_count(),
                                         "load_before": load_before,
                                         "measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}) + "\n")
        if code:
            failed.append(name)
    print(f"\nJSON lines: {out}   table: python benchmarks/table.py {out}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


def settle(wait_s: float = SETTLE_S) -> list[float]:
    """Wait (at most ``wait_s``) for the previous benchmark's processes to leave the run queue, so
    each starts on the box as others left it; the load averages then, which say whether anything
    else was running (a benchmark's own processes raise the load it reports at its end)."""
    ends = time.monotonic() + wait_s
    while os.getloadavg()[0] > (os.cpu_count() or 1) / 2 and time.monotonic() < ends:
        time.sleep(5)
    return [round(x, 2) for x in os.getloadavg()]


def _run(name: str, arguments: list[str]) -> tuple[int, list[dict[str, object]]]:
    """Run one benchmark, echoing its output; its exit code and the JSON objects it printed."""
    figures = []
    with subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), *arguments], stdout=subprocess.PIPE,
                          text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "load_average" not in record:
                    record["load_average"] = [round(x, 2) for x in os.getloadavg()]
                if isinstance(record, dict):
                    figures.append(record)
    return process.returncode, figures


if __name__ == "__main__":
    sys.exit(main())
