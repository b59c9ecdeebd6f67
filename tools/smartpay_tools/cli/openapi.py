"""``smartpay openapi``: export the combined API document, or ``--check`` it against the code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.cli.common import EXIT_FAILED, EXIT_OK


def add_commands(command: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("openapi", "export the combined OpenAPI document (or --check it)",
                "Generated from the functions' resolvers, with the security schemes.")
    p.add_argument("--out", default=str(PROJECT_ROOT / "openapi.json"), help="file to write or check")
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    p.set_defaults(func=cmd_openapi)


def cmd_openapi(args: argparse.Namespace) -> int:
    """Export the API document, or (--check) fail when the committed file and the code disagree."""
    from smartpay_tools.local import openapi

    fresh = openapi.render(openapi.build())
    target = Path(args.out)
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != fresh:
            print(f"{target} is out of date with the code: run `smartpay openapi` and commit it", file=sys.stderr)
            return EXIT_FAILED
        print(f"{target} matches the code")
        return EXIT_OK
    target.write_text(fresh)
    print(f"wrote {target}")
    return EXIT_OK
