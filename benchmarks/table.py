"""Render docs/performance.md's table from ``make bench``'s JSON lines: one row per benchmark (the
newest line of each), its headline figures by their JSON names, its limit, when and under what load.

    python benchmarks/table.py reports/bench-<UTC>.jsonl [more.jsonl ...]   # print the table
    python benchmarks/table.py reports/bench-<UTC>.jsonl --write            # keep it: results + page

``--write`` merges the lines into ``benchmarks/results.jsonl`` (the newest line per benchmark wins)
and replaces the table between the markers in docs/performance.md; tests/unit/test_docs_reference.py
checks that the page's table is this rendering of that file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.jsonl"
PAGE = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench-table: begin (benchmarks/table.py) -->", "<!-- bench-table: end -->"

#: benchmark -> (what one run measures, headline JSON names, the limit it is read against)
HEADLINES: dict[str, tuple[str, list[str], str]] = {
    "cold_start": ("every function's init ÷ a plain Powertools function's, same run",
                   ["worst_ratio", "worst_cpu_ratio", "snapstart_worst_init_over_floor",
                    "snapstart_worst_after_restore_ratio", "samples"],
                   "worst_ratio ≤ 0.35; SnapStart: init - floor ≤ 0.02, first request after a restore ≤ 0.15 "
                   "(x the baseline)"),
    "payroll_import": ("a payroll file into a fresh database, then the same file again",
                       ["rows", "elapsed_s", "rows_per_s", "ratio_to_target", "rerun_s", "rerun_issued"],
                       "300,000 rows ≤ 60 s; re-run issues 0"),
    "buffr_clients": ("HTTP client setups against the simulator beside the bare wire",
                      ["n", "concurrency", "wire_s", "clients"], "choose by figures"),
    "disburse_batch": ("one batch through the disburse pipeline, simulated Buffr latency",
                       ["n", "latency_ms", "elapsed_s", "latency_bound_s", "client_s", "ratio_to_wire",
                        "double_credits"], "ratio_to_wire ≤ 1.3; 0 double credits"),
    "webhook_receipt": ("fresh events then the same events again, in-process warm, moto + PostgreSQL",
                        ["events", "fresh_p50_ms", "fresh_p99_ms", "duplicate_p50_ms", "dynamodb_calls_per_fresh",
                         "pg_transactions_per_fresh", "dynamodb_calls_per_duplicate"],
                        "fresh p50 ≤ 10 ms, p99 ≤ 30 ms; ≤ 2 DynamoDB calls + 1 transaction per fresh event"),
    "reconcile": ("open vouchers checked against the simulator; then a whole cycle in shards",
                  ["n", "elapsed_s", "ratio_to_wire", "speedup_over_guide", "peak_rss_mb", "cycle_wall_s"],
                  "ratio_to_wire ≤ 1.3; ≥ 50 x the guide's loop; ≤ 256 MB, flat"),
    "cycle_run": ("a whole cycle run through the queue at Buffr's agreed rate",
                  ["vouchers", "agreed_rate", "consumers", "elapsed_s", "ratio", "busiest_second",
                   "busiest_second_sent", "double_credits"],
                  "ratio ≤ 1.2; busiest second ≤ 1.05 x agreed_rate; 0 double credits"),
    "pay_day": ("a programme cycle on the local stack: import, prepare, approve, the run through the queue at "
                "the agreed rate (Buffr 150 ± 50 ms), reconcile, compliance report",
                ["vouchers", "stages_s", "ratio", "goodput_ratio", "busiest_second_all_calls", "busiest_second_sent",
                 "disburse_calls", "status_calls", "reconcile_invocations", "reconcile_remaining", "double_credits"],
                "ratio ≤ 1.15 clean, ≤ 1.35 with 10 % 5xx + 2 % timeouts; prepare, approve ≤ 10 s; busiest "
                "second ≤ 1.05 x agreed rate; reconcile remaining 0; 0 double credits"),
    "audit_trigger_ab": ("audit rows written by the database, A/B against the tree before them in one run "
                         "(alternating rounds; both sides unprepared, as behind RDS Proxy)",
                         ["rounds", "vouchers", "events", "ratio_to_wire", "webhook_fresh_p50_ms"],
                         "new_over_old ≤ 1.05 for the batch's ratio_to_wire and the webhook p50"),
    "anchor_heads": ("the audit anchor's heads query at national scale, as each role that writes anchors",
                     ["vouchers", "audit_rows", "disburse_heads_s", "reconcile_heads_s"],
                     "inside the role's statement timeout (disburse 5 s, reconcile 30 s)"),
}
SKIP = {"benchmark", "variant", "measured_at", "load_average", "load_before", "quick", "exit", "cpus"}


def variant(record: dict[str, Any]) -> str | None:
    """What sets a run apart from the benchmark's other rows: a pay day's size, faults and company."""
    if record["benchmark"] != "pay_day":
        return record.get("variant")
    faults = record.get("faults") or {}
    parts = [f"{record.get('vouchers', 0):,} vouchers"]
    parts += [f"{k.removesuffix('_rate').replace('error', '5xx').replace('rate_429', '429')} {v:g}"
              for k, v in faults.items()]
    if record.get("reconcile_during"):
        parts.append("reconcile during the run")
    return ", ".join(parts)


def key(record: dict[str, Any]) -> str:
    """A benchmark's row, or one row per variant when it runs several."""
    label = variant(record)
    return f"{record['benchmark']} ({label})" if label else record["benchmark"]


def load(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """The newest record per benchmark (and variant), in the order they first appear."""
    records: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[key(record)] = record
    return records


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return "/".join(_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {_value(v.get('per_s', v)) if isinstance(v, dict) else _value(v)}"
                         for k, v in value.items())
    return str(value)


def row(record: dict[str, Any]) -> str:
    name = record["benchmark"]
    what, keys, limit = HEADLINES.get(name, ("", [k for k, v in record.items()
                                                  if k not in SKIP and not isinstance(v, dict | list)], ""))
    figures = ", ".join(f"{key} **{_value(record[key])}**" for key in keys if key in record)
    load = _value(record.get("load_average", "")) or "?"
    when = f"{record.get('measured_at', '?')}, load {load}" + (", --quick" if record.get("quick") else "")
    # Busy: something else ran. The load before the benchmark says so (its own processes raise the
    # load it reports at its end); lines without it are judged by that end load.
    cpus, before = record.get("cpus") or 0, record.get("load_before")
    if before:
        when += f" (before it: {_value(before)})"
    end = record.get("load_average") or [0]
    busy = before[0] if before else max(end if isinstance(end, list) else [end])
    if cpus and busy > cpus:
        when += f" on {cpus} cores: **busy box**, not comparable with the limit"
    label = f"`{name}` ({variant(record)})" if variant(record) else f"`{name}`"
    return f"| {label} | {what} | {figures} | {limit} | {when} |"


def render(records: dict[str, dict[str, Any]]) -> str:
    lines = ["| benchmark | one run | figures (JSON names) | limit | measured (load: 1/5/15 min) |",
             "| --- | --- | --- | --- | --- |"]
    lines += [row(record) for record in records.values()]
    return "\n".join(lines)


def write(records: dict[str, dict[str, Any]]) -> None:
    merged = {**(load([RESULTS]) if RESULTS.exists() else {}), **records}
    RESULTS.write_text("".join(json.dumps(r) + "\n" for r in merged.values()))
    page = PAGE.read_text()
    block = f"{BEGIN}\n{render(merged)}\n{END}"
    PAGE.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, page, flags=re.S))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="JSON lines written by benchmarks/run_all.py")
    parser.add_argument("--write", action="store_true",
                        help="merge into benchmarks/results.jsonl and replace docs/performance.md's table")
    args = parser.parse_args()
    records = load(args.files)
    if args.write:
        write(records)
        print(f"updated {RESULTS.relative_to(ROOT)} and {PAGE.relative_to(ROOT)}")
    else:
        print(render(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
