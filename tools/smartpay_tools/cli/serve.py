"""``smartpay serve``: the local stack (gateway, schedules, moto, PostgreSQL, the Buffr simulator) until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from smartpay_tools.cli.common import EXIT_OK, safe_url, stack_from_args


def add_commands(command: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("serve", "run the local stack: gateway on 127.0.0.1:3000, moto, PostgreSQL, Buffr simulator",
                "The template's functions behind a local API Gateway (Swagger UI at /docs); the Buffr simulator "
                "sends its webhooks to this gateway (env file LocalStack.BuffrWebhooks).")
    p.add_argument("--port", type=int, default=None, help="gateway port (default: LocalStack.GatewayPort, 3000)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--schedule-rate", default=None,
                   help="run the template's schedules at this rate instead, e.g. 'rate(1 minute)' or seconds")
    p.add_argument("--no-schedule", action="store_true", help="do not run the template's schedules")
    p.add_argument("--sam-env-vars", default=None,
                   help="where to write the env-vars file for `sam local invoke|start-api --env-vars` "
                        "(default .local/sam-env.json; docs/deployment.md \"SAM local with Docker\")")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from smartpay_tools.local.gateway import Gateway, docs_routes, serve
    from smartpay_tools.local.scheduler import Scheduler

    stack = stack_from_args(args)
    port = args.port or int(stack.local.get("GatewayPort", 3000))
    stack.webhook_url = f"http://127.0.0.1:{port}"
    stack.start_services()
    server = serve(Gateway(stack, extra_routes=docs_routes()), port=port)
    for poller in stack.start_event_sources():
        print(f"Queue: {poller.queue_url} -> {poller.function} (batch {poller.event.batch_size}, "
              f"at most {poller.concurrency} at once)")
    scheduler = None
    if not args.no_schedule:
        scheduler = Scheduler(stack.functions, stack.invoke, stack.region, rate_override=args.schedule_rate,
                              on_fire=lambda f: print(f"[schedule] {f.at:%H:%M:%S} {f.logical_id}: "
                                                      f"{json.dumps(f.result, default=str)[:300]}", flush=True))
        for logical_id, schedule, every in scheduler.schedules():
            print(f"Schedule: {logical_id} {schedule.event_name} every {every:g} s "
                  f"({args.schedule_rate or schedule.schedule})")
        scheduler.start()
    print(f"PostgreSQL: {stack.postgres.origin} ({safe_url(stack.postgres.url)})")
    print(f"DynamoDB (moto): {stack.moto.endpoint}")
    print(f"Buffr simulator: {stack.buffr.url} (admin: {stack.buffr.url}/_sim/stats, /_sim/config)")
    hooks = stack.buffr.configure()["webhooks"]
    print(f"  webhooks -> {hooks.get('url') or 'off (no WEBHOOK_SECRET)'}: "
          + ", ".join(f"{k}={v}" for k, v in hooks.items() if k not in {"url", "configured"}))
    print(f"API: http://127.0.0.1:{port}  routes:")
    for logical_id, spec in sorted(stack.functions.items()):
        for route in spec.routes:
            print(f"  {route.method:6} {route.path:45} -> {logical_id}")
    print(f"API document: http://127.0.0.1:{port}/openapi.json   Swagger UI: http://127.0.0.1:{port}/docs")
    from smartpay_tools.local import sam_env

    sam_file = sam_env.write(stack, Path(args.sam_env_vars) if args.sam_env_vars else sam_env.DEFAULT_PATH)
    print(f"sam local (Docker): sam local invoke <Function> -e events/... --env-vars {sam_file} "
          "(after `make build`; `smartpay seed-events` once; webhook events: `smartpay sign-event FILE`)")
    print("Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        if scheduler is not None:
            scheduler.stop()
        server.shutdown()
        stack.stop()
    return EXIT_OK
