"""The simulator's command line: fault flags (shared with ``smartpay simulator``) and ``python -m smartpay_tools.buffr_sim``."""


from __future__ import annotations

import argparse
import json
import os

from smartpay_tools.buffr_sim.server import serve
from smartpay_tools.buffr_sim.state import DEFAULT_API_KEY, DEFAULT_PORT, SECRET_ENV, SimConfig
from smartpay_tools.buffr_sim.webhook_sender import (
    add_knob_arguments,
    knobs_from_args,
    require_loopback,
)


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """Buffr API faults and webhook knobs as flags (shared with ``smartpay simulator``)."""
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every Buffr API call")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of calls answered 503")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share of calls that hang (hang_ms)")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of calls answered 429")
    parser.add_argument("--key-retention-s", type=float, default=0.0,
                        help="forget an Idempotency-Key after this many seconds (0: never)")
    parser.add_argument("--webhook-url", default=None,
                        help="Ketchup base URL for webhooks (loopback only), e.g. http://127.0.0.1:3000")
    add_knob_arguments(parser)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(latency_ms=args.latency_ms, error_rate=args.error_rate, timeout_rate=args.timeout_rate,
                     rate_429=args.rate_429, key_retention_s=args.key_retention_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="buffr-sim", description=f"Buffr simulator (loopback only). Webhooks are signed with the "
        f"secrets in ${SECRET_ENV} (none: no webhooks).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--webhooks", type=json.loads, default=None,
                        help="webhook knobs as a JSON object (flags override it)")
    add_fault_arguments(parser)
    args = parser.parse_args(argv)
    try:
        knobs = knobs_from_args(args, args.webhooks)
        if args.webhook_url:
            require_loopback(args.webhook_url)
    except ValueError as exc:
        parser.error(str(exc))
    serve(args.host, args.port, args.api_key, config_from_args(args), webhook_url=args.webhook_url,
          webhook_secrets=os.environ.get(SECRET_ENV) or None, knobs=knobs)
    return 0
