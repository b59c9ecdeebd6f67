"""``smartpay reconcile`` (run now, with progress, resuming) and ``smartpay report`` (print / export).

``reconcile`` invokes the template's ReconcileFunction on the local stack, invocation after
invocation (each bounded by the function's timeout, as EventBridge would), until the run is
complete; ``--shards K`` runs the K shard splits side by side. ``report`` reads the database
directly (the stack's PostgreSQL, as the schema owner, like the other operator tools).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from smartpay_tools.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def add_commands(command: Any, stack_factory: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("reconcile", "reconcile now with Buffr (progress bar; resumes an unfinished run)",
                "Invokes the template's ReconcileFunction on the local stack until the run is complete (each "
                "invocation bounded by the function's timeout), then prints the run's report. Exit 1 if an "
                "invocation failed.")
    p.add_argument("--mode", choices=("incremental", "full"), default="incremental",
                   help="incremental: open vouchers + changed since the last run; full: + changed within the cycle "
                        "window (RECONCILE_FULL_WINDOW_DAYS)")
    p.add_argument("--since", help="window start, ISO-8601 with a zone (default: the last run's end)")
    p.add_argument("--voucher-id", action="append", dest="voucher_ids", help="only this voucher (repeatable)")
    p.add_argument("--shard", type=int, default=None, help="run only this shard (0-based) of --shards")
    p.add_argument("--shards", type=int, default=1, help="split by a stable hash of the voucher id")
    p.add_argument("--dry-run", action="store_true", help="classify and record only; change nothing")
    p.add_argument("--redisburse-pending", action="store_true",
                   help="re-send vouchers pending and unknown at Buffr past the grace period (same key)")
    p.add_argument("--grace-seconds", type=int, default=None,
                   help="how long a pending voucher may be unknown at Buffr before it is a discrepancy")
    p.add_argument("--max-invocations", type=int, default=1000, help="stop after this many invocations per shard")
    p.add_argument("--buffr-url", help="Buffr to ask (default: the local simulator on 127.0.0.1:4010, shared with "
                                       "a running `smartpay serve`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no report, only the summary lines")
    p.set_defaults(func=lambda args: cmd_reconcile(args, stack_factory(args)))

    p = command("report", "print or export a reconciliation report, per run or per programme cycle",
                "Counts by status, discrepancies by class and action, amounts issued / redeemed / outstanding; a "
                "readable text summary, a CSV of the figures (--csv) and of a run's per-voucher discrepancies "
                "(--records). Reads the database directly.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run id")
    which.add_argument("--latest", action="store_true", help="the latest run")
    which.add_argument("--cycle", help="a programme cycle, e.g. 2026-11 (with --programme)")
    p.add_argument("--programme", default="old_age", help="the programme of --cycle (default old_age)")
    p.add_argument("--csv", help="write the report's figures as CSV to this file ('-' for stdout)")
    p.add_argument("--records", help="write the run's per-voucher discrepancies as CSV to this file")
    p.add_argument("--json", nargs="?", const=True, default=False, metavar="FILE",
                   help="print the report as JSON instead of text (or write it to FILE)")
    from smartpay_tools.cli import compliance as compliance_cli

    compliance_cli.add_report_arguments(p)
    p.set_defaults(func=lambda args: cmd_report(args, stack_factory(args)))


def _event(args: argparse.Namespace, shard: int) -> dict[str, Any]:
    event: dict[str, Any] = {"dry_run": args.dry_run, "redisburse_pending": args.redisburse_pending}
    if args.voucher_ids:
        event["voucher_ids"] = args.voucher_ids
    else:
        event.update(mode=args.mode, shard=shard, shards=args.shards)
        if args.since:
            event["since"] = args.since
    if args.grace_seconds is not None:
        event["grace_seconds"] = args.grace_seconds
    return event


def cmd_reconcile(args: argparse.Namespace, stack: Any) -> int:
    from tqdm import tqdm

    from smartpay_tools.local.lambda_runtime import InvocationError

    if args.shards < 1 or (args.shard is not None and not 0 <= args.shard < args.shards):
        print("error: --shard must be in 0..--shards-1", file=sys.stderr)
        return EXIT_USAGE
    from smartpay_tools.local.services import port_open

    shards = [args.shard] if args.shard is not None else list(range(args.shards))
    sim_port = int(stack.local.get("BuffrSimulatorPort", 4010))
    if not args.buffr_url and port_open("127.0.0.1", sim_port):
        # A running `smartpay serve` owns the simulator (and Buffr's state): ask that one.
        args.buffr_url = f"http://127.0.0.1:{sim_port}"
        print(f"using the running Buffr simulator at {args.buffr_url}", file=sys.stderr)
    if args.buffr_url:
        stack.extra_env["BUFFR_API_URL"] = args.buffr_url
    stack.start_services(simulator=not args.buffr_url)
    bars = {s: tqdm(desc=f"shard {s}/{args.shards}" if args.shards > 1 else "reconcile", unit="vouchers",
                    position=i, disable=args.quiet, leave=True) for i, s in enumerate(shards)}
    finals: dict[int, dict[str, Any]] = {}
    errors: list[str] = []

    def run_shard(shard: int) -> None:
        bar = bars[shard]
        for _ in range(args.max_invocations):
            try:
                reply = stack.invoke("ReconcileFunction", _event(args, shard))
            except InvocationError as exc:
                errors.append(f"shard {shard}: {exc.payload.get('errorMessage', exc)}")
                return
            done = reply["checked"]
            bar.total = done + max(reply["remaining"], 0)
            bar.n = done
            bar.set_postfix(healed=reply["healed"], flagged=reply["flagged"], refresh=False)
            bar.refresh()
            finals[shard] = reply
            if reply["status"] == "completed" or reply.get("stopped") == "busy" or args.voucher_ids:
                return

    try:
        threads = [threading.Thread(target=run_shard, args=(s,)) for s in shards]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for bar in bars.values():
            bar.close()
        for shard in shards:
            reply = finals.get(shard)
            if reply is None:
                continue
            note = " (another invocation holds this shard; try again later)" if reply.get("stopped") == "busy" else ""
            print(f"run {reply['run_id']} [{reply['status']}{', dry run' if reply['dry_run'] else ''}] shard "
                  f"{reply['shard']}/{reply['shards']}: checked {reply['checked']}, matched {reply['matched']}, healed "
                  f"{reply['healed']}, flagged {reply['flagged']}, re-sent {reply['redisbursed']}, unavailable "
                  f"{reply['unavailable']}, remaining {reply['remaining']}{note}")
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        if len(finals) == 1 and not errors and not args.quiet:
            reply = next(iter(finals.values()))
            report = stack.invoke("ReconcileFunction", {"report": {"run_id": reply["run_id"]}})
            print("\n" + report["text"])
    finally:
        stack.stop()
    return EXIT_FAILED if errors else EXIT_OK


def cmd_report(args: argparse.Namespace, stack: Any) -> int:
    import psycopg
    from psycopg.rows import dict_row

    from smartpay_tools.local.function_code import import_module
    from smartpay_tools.local.services import resolve_postgres

    recon_report = import_module("reconcile", "reconcile.report")
    file_url = stack.env_file.get("Parameters", {}).get("DATABASE_URL") or None
    postgres = resolve_postgres(stack.database_url or file_url)
    if args.compliance:
        from smartpay_tools.cli import compliance as compliance_cli

        return compliance_cli.cmd_report(args, postgres.url, postgres.stop)
    try:
        with psycopg.connect(postgres.url, row_factory=dict_row) as conn:
            if args.cycle:
                report = recon_report.cycle_report(conn, args.programme, args.cycle)
            else:
                run_id = args.run
                if args.latest:
                    row = conn.execute("SELECT id::text AS id FROM reconciliation_runs ORDER BY started_at DESC "
                                       "LIMIT 1").fetchone()
                    if row is None:
                        print("no reconciliation runs yet", file=sys.stderr)
                        return EXIT_FAILED
                    run_id = row["id"]
                try:
                    report = recon_report.run_report(conn, run_id)
                except (LookupError, psycopg.errors.InvalidTextRepresentation):
                    print(f"error: no reconciliation run {run_id}", file=sys.stderr)
                    return EXIT_USAGE
            if args.records:
                if report["report"] != "run":
                    print("error: --records goes with a run (--run or --latest)", file=sys.stderr)
                    return EXIT_USAGE
                with _open(args.records) as out:
                    n = recon_report.write_records_csv(recon_report.records(conn, report["run"]["id"]), out)
                print(f"wrote {n} discrepancy records to {args.records}", file=sys.stderr)
        if isinstance(args.json, str):
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
            print(f"wrote {args.json}", file=sys.stderr)
        print(json.dumps(report, indent=2, default=str) if args.json is True else recon_report.to_text(report))
        if args.csv:
            with _open(args.csv) as out:
                out.write(recon_report.to_csv(report))
            if args.csv != "-":
                print(f"wrote {args.csv}", file=sys.stderr)
    finally:
        postgres.stop()
    return EXIT_OK


class _Stdout:
    def __enter__(self) -> Any:
        return sys.stdout

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()


def _open(path: str) -> Any:
    return _Stdout() if path == "-" else Path(path).open("w", newline="", encoding="utf-8")
