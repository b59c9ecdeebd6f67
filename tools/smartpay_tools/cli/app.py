"""``smartpay``: the operator CLI. Start with ``demo`` (the main job: a whole pay cycle and its report),
``serve`` (the local stack) and ``cycle`` (pay a programme cycle as a run, four eyes); then functions,
data, reconciliation, webhooks and keys.

Run ``smartpay COMMAND --help`` for each command's options. Exit codes: 0 success, 1 the
operation failed (e.g. a function error, vouchers failed or left pending), 2 bad usage or input,
3 a dependency (database, moto, gateway, API) is unavailable.
"""

from __future__ import annotations

import argparse
import os
import sys

from smartpay_tools.cli import (
    cycle,
    data,
    demo,
    invoke,
    keys,
    openapi,
    reconcile,
    replay,
    serve,
    simulator,
)
from smartpay_tools.cli.common import EXIT_UNAVAILABLE, stack_from_args
from smartpay_tools.data import saved_events


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartpay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-vars", default=os.environ.get("SMARTPAY_ENV_VARS"),
                        help="SAM env-vars file (default: env.local.json, as in samconfig.toml)")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL (default: DATABASE_URL, else 127.0.0.1:5432, else embedded)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = sub.add_parser

    def command(name: str, help_: str, description: str = "") -> argparse.ArgumentParser:
        """A subcommand whose ``--help`` starts with its one-line help, then the details."""
        return add(name, help=help_, description=f"{help_[0].upper()}{help_[1:]}." + (f" {description}"
                                                                                       if description else ""))

    # One module per command group, registered in the order `smartpay --help` lists them: the main
    # job, the local stack and paying a cycle first.
    demo.add_commands(command)
    serve.add_commands(command)
    cycle.add_commands(command, stack_from_args)
    reconcile.add_commands(command, stack_from_args)
    keys.add_commands(command)
    saved_events.add_commands(command, stack_from_args)
    invoke.add_commands(command)
    data.add_commands(command, "generate", "import-payroll")
    simulator.add_commands(command)
    data.add_commands(command, "import-beneficiaries")
    openapi.add_commands(command)
    replay.add_commands(command)

    from smartpay_tools.cli import compliance as compliance_cli

    compliance_cli.add_audit_command(command, compliance_cli.database_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.OperationalError | ConnectionError):
            print(f"unavailable: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        raise


if __name__ == "__main__":
    sys.exit(main())
