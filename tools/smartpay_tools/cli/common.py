"""What every command shares: exit codes, the local stack from the global options, small printers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def stack_from_args(args: argparse.Namespace) -> Any:
    """The local stack the global ``--env-vars`` / ``--database-url`` options describe (not started)."""
    from smartpay_tools.local.stack import LocalStack

    return LocalStack(env_file_path=Path(args.env_vars) if args.env_vars else None,
                      database_url=args.database_url)


def safe_url(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(url)
    return f"{parts.get('host', '')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def print_rejected(rejected: list[tuple[int, str]]) -> None:
    for line, reason in rejected[:50]:
        print(f"  line {line}: {reason}")
    if len(rejected) > 50:
        print(f"  … and {len(rejected) - 50} more")


def webhook_secrets(stack: Any) -> str:
    """Signing secrets for replay: SMARTPAY_WEBHOOK_SECRET, else the env-vars file's WebhookFunction block."""
    value = stack.webhook_secrets
    if not value:
        raise ValueError("no webhook secret: set SMARTPAY_WEBHOOK_SECRET or WebhookFunction.WEBHOOK_SECRET "
                         "in the env-vars file")
    return value
