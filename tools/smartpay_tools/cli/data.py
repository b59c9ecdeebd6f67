"""Data commands: ``smartpay generate``, ``import-payroll`` and ``import-beneficiaries``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smartpay_tools.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_rejected, stack_from_args


def add_commands(command: Any, *names: str) -> None:
    """Register the commands named (all three when none is); ``command(name, help, description)`` makes
    a subcommand parser. ``smartpay --help`` lists the simulator between the two imports."""
    registrars = {"generate": _add_generate, "import-payroll": _add_import_payroll,
                  "import-beneficiaries": _add_import_beneficiaries}
    for name in names or tuple(registrars):
        registrars[name](command)


def _add_generate(command: Any) -> None:
    p = command("generate", "write a synthetic beneficiary (or payroll) CSV",
                "Fake but valid ID numbers, names and phone numbers; the same seed gives the same file.")
    p.add_argument("--count", type=int, default=5000, help="rows to write (default 5000)")
    p.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    p.add_argument("--out", default="beneficiaries.csv", help="output file (default beneficiaries.csv)")
    p.add_argument("--payroll-cycle", default=None, metavar="YYYY-MM",
                   help="write a payroll CSV for this cycle instead of a registry CSV")
    p.set_defaults(func=cmd_generate)


def _add_import_payroll(command: Any) -> None:
    p = command("import-payroll", "import a payroll CSV: upsert beneficiaries, issue vouchers",
                "Chunked and re-runnable: a second run issues nothing new. Rejected rows are listed with line "
                "and reason (exit 1).")
    p.add_argument("csv", help="payroll CSV (see `smartpay generate --payroll-cycle`)")
    p.add_argument("--expires-at", default=None, help="ISO-8601 expiry (default: start of cycle month + 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import_payroll)


def _add_import_beneficiaries(command: Any) -> None:
    p = command("import-beneficiaries", "upsert a beneficiary CSV into the registry",
                "COPY into a staging table, then one upsert per chunk; rejected rows listed (exit 1).")
    p.add_argument("csv", help="registry CSV (see `smartpay generate`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import_beneficiaries)


def cmd_generate(args: argparse.Namespace) -> int:
    from smartpay_tools.data import datagen

    out = Path(args.out)
    if args.payroll_cycle:
        count = datagen.generate_payroll_file(out, args.count, args.payroll_cycle, args.seed)
        print(f"wrote {count} payroll rows for {args.payroll_cycle} to {out}")
        return EXIT_OK
    count = datagen.generate_file(out, args.count, args.seed)
    print(f"wrote {count} beneficiaries to {out}")
    return EXIT_OK


def cmd_import_payroll(args: argparse.Namespace) -> int:
    """Payroll CSV → beneficiaries upserted + vouchers issued (chunked, re-runnable)."""
    from datetime import datetime

    from tqdm import tqdm

    from smartpay import migrate
    from smartpay_tools.data import payroll_import

    expires_at = datetime.fromisoformat(args.expires_at) if args.expires_at else None
    if expires_at is not None and expires_at.tzinfo is None:
        print("error: --expires-at needs a time zone (e.g. 2027-01-31T23:59:59+02:00)", file=sys.stderr)
        return EXIT_USAGE
    stack = stack_from_args(args)
    stack.start_services(migrate=False, simulator=False)
    try:
        migrate.apply(stack.postgres.url)
        with tqdm(unit="rows", desc="payroll", disable=args.quiet) as bar:
            report = payroll_import.import_file(stack.postgres.url, Path(args.csv), expires_at=expires_at,
                                                progress=bar.update)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        stack.stop()
    print(f"rows: {report.rows}  beneficiaries upserted: {report.beneficiaries_upserted}  "
          f"vouchers issued: {report.vouchers_issued}  already issued: {report.already_issued}  "
          f"rejected: {len(report.rejected)}")
    print_rejected(report.rejected)
    return EXIT_OK if not report.rejected else EXIT_FAILED


def cmd_import_beneficiaries(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from smartpay import migrate
    from smartpay_tools.data import registry_import

    stack = stack_from_args(args)
    stack.start_services(migrate=False, simulator=False)
    try:
        migrate.apply(stack.postgres.url)
        with tqdm(unit="rows", desc="import", disable=args.quiet) as bar:
            report = registry_import.import_file(stack.postgres.url, Path(args.csv), progress=bar.update)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        stack.stop()
    print(f"rows: {report.rows}  upserted: {report.upserted}  rejected: {len(report.rejected)}")
    print_rejected(report.rejected)
    return EXIT_OK if not report.rejected else EXIT_FAILED
