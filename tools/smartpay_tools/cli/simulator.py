"""``smartpay simulator``: the Buffr simulator alone, in the foreground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smartpay_tools.cli.common import EXIT_OK, EXIT_USAGE


def add_commands(command: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("simulator", "run the Buffr simulator (default 127.0.0.1:4010) until Ctrl-C",
                "Buffr's disburse and status endpoints on loopback; after each credit it sends "
                       "signed webhooks to the gateway (knobs: flags, else the env file's LocalStack.BuffrWebhooks; "
                       "change them at run time with PUT /_sim/config).")
    p.add_argument("--port", type=int, default=None, help="default: LocalStack.BuffrSimulatorPort (4010)")
    from smartpay_tools.buffr_sim.options import add_fault_arguments

    add_fault_arguments(p)
    p.set_defaults(func=cmd_simulator)


def cmd_simulator(args: argparse.Namespace) -> int:
    """The Buffr simulator alone, in the foreground (``smartpay serve`` starts it too)."""
    from smartpay_tools.buffr_sim.options import config_from_args
    from smartpay_tools.buffr_sim.server import serve
    from smartpay_tools.buffr_sim.state import DEFAULT_PORT
    from smartpay_tools.buffr_sim.webhook_sender import knobs_from_args, require_loopback
    from smartpay_tools.local.stack import LocalStack

    stack = LocalStack(env_file_path=Path(args.env_vars) if args.env_vars else None)
    port = args.port or int(stack.local.get("BuffrSimulatorPort", DEFAULT_PORT))
    try:
        knobs = knobs_from_args(args, stack.simulator_knobs())
        url = require_loopback(args.webhook_url or stack.gateway_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    secrets = stack.webhook_secrets or None
    print(f"Buffr simulator on http://127.0.0.1:{port} (admin: /_sim/config, /_sim/stats, /_sim/reset)")
    print(f"webhooks -> {url if secrets else 'off (no WEBHOOK_SECRET)'}: "
          + ", ".join(f"{k}={v}" for k, v in knobs.as_dict().items()), flush=True)
    serve(port=port, api_key=stack.buffr_api_key, config=config_from_args(args),
                    webhook_url=url, webhook_secrets=secrets, knobs=knobs)
    return EXIT_OK
