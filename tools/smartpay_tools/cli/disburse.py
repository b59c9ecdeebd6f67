"""``smartpay disburse``: a programme cycle through the API, call after call, until nothing is left."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from smartpay_tools.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, stack_from_args


def add_commands(command: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command(
        "disburse", "disburse a programme cycle through the API (resumable)",
        "Calls POST /api/v1/disbursements for the cycle again and again until nothing is left "
        "(or --limit is reached); a second run only sends what is left. Exit codes: 0 all done, 1 some failed "
        "or still pending, 2 refused (key, scope, input), 3 the API is unavailable.")
    p.add_argument("--programme", required=True, help="programme code, e.g. old_age")
    p.add_argument("--cycle", required=True, metavar="YYYY-MM", help="pay cycle, e.g. 2026-11")
    p.add_argument("--limit", type=int, default=None, help="disburse at most this many vouchers in this run")
    p.add_argument("--batch-size", type=int, default=1000, help="vouchers per API call (1..10000; default 1000)")
    p.add_argument("--url", default=None, help="API base URL (default: the local gateway, LocalStack.GatewayPort)")
    p.add_argument("--api-key", default=None,
                   help="operator key with vouchers:write (default: $SMARTPAY_API_KEY, else the env file's "
                   "LocalStack.OperatorApiKey)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_disburse)


def cmd_disburse(args: argparse.Namespace) -> int:
    """Disburse a programme cycle through the API, call after call, until nothing is left."""
    from tqdm import tqdm

    from smartpay_tools.cli import disburse_cycle

    stack = stack_from_args(args)
    url = args.url or stack.gateway_url
    api_key = args.api_key or os.environ.get("SMARTPAY_API_KEY") or str(stack.local.get("OperatorApiKey") or "")
    if not api_key:
        print("error: no API key: give --api-key (or SMARTPAY_API_KEY)", file=sys.stderr)
        return EXIT_USAGE
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        print("error: --batch-size and --limit must be positive", file=sys.stderr)
        return EXIT_USAGE
    with tqdm(unit="voucher", desc=f"disburse {args.programme} {args.cycle}", disable=args.quiet) as bar:
        def progress(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done)

        try:
            summary = disburse_cycle.run(url, api_key, args.programme, args.cycle, limit=args.limit,
                                         batch_size=args.batch_size, progress=progress)
        except disburse_cycle.Refused as exc:
            print(f"error: the API refused the request: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except disburse_cycle.Unavailable as exc:
            print(f"unavailable: {exc} (is `smartpay serve` running, or the URL right?)", file=sys.stderr)
            return EXIT_UNAVAILABLE
    counts = summary.outcomes
    print(f"calls: {summary.calls}  attempted: {summary.attempted}  active: {counts['active']}  "
          f"pending: {counts['pending']}  failed: {counts['failed']}  "
          f"skipped: {counts['skipped'] + counts['not_found']}  left in the cycle: {summary.remaining}  "
          f"stopped: {summary.stopped}")
    if counts["pending"] or summary.stopped == "no progress":
        print("some vouchers are still pending: run the command again later (or let reconciliation finish them)")
    return EXIT_OK if summary.complete else EXIT_FAILED
