"""``smartpay demo``: the main job, a whole pay cycle on the local stack and its report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from smartpay_tools import PROJECT_ROOT


def add_commands(command: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("demo", "the main job: a whole pay cycle on the local stack (issue, disburse, webhooks with "
                        "faults, reconciliation) and its end-of-cycle report (text, CSV, HTML)")
    p.add_argument("--port", type=int, default=None, help="gateway port (default: LocalStack.GatewayPort, 3000)")
    p.add_argument("--beneficiaries", type=int, default=5000, help="registry size to generate (default 5000)")
    p.add_argument("--out", default=str(PROJECT_ROOT / "reports"), help="where the CSV and HTML reports go")
    p.add_argument("--database-name", default="smartpay_demo",
                   help="the demo's own database, dropped and re-created at each run (default smartpay_demo)")
    p.add_argument("--serve", action="store_true", help="keep serving after the demo")
    p.add_argument("--logs", default=None,
                   help="the folder for the functions' log files, one per function (default .local/logs)")
    p.add_argument("--verbose", action="store_true",
                   help="stream every function's log lines to the terminal instead of the log files "
                        "(the terminal otherwise shows a line per stage and the report)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from smartpay_tools.demo import run as demo
    from smartpay_tools.local import envfile

    env_vars = Path(args.env_vars) if args.env_vars else None
    port = args.port or int(envfile.local_settings(envfile.load(env_vars)).get("GatewayPort", 3000))
    return demo.run(port=port, beneficiaries=args.beneficiaries, out_dir=Path(args.out),
                    database_url=args.database_url, keep_serving=args.serve, env_vars=env_vars,
                    database_name=args.database_name, log_dir=None if args.verbose else Path(args.logs or demo.LOG_DIR))
