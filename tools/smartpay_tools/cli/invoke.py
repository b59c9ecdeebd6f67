"""``smartpay invoke`` (one function with an event file, locally or on a deployed stack) and ``smartpay migrate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smartpay_tools.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    stack_from_args,
    webhook_secrets,
)


def add_commands(command: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("invoke", "invoke one function with an event file, like `sam local invoke`",
                "Prints the function's result as JSON; exit 1 if the function raised.")
    p.add_argument("function", help="logical id (BeneficiariesFunction) or short name (beneficiaries)")
    p.add_argument("--event", "-e", help="event JSON file (e.g. events/beneficiaries/verify.json)")
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.add_argument("--sign", action="store_true",
                   help="re-sign a saved webhook event (Standard Webhooks headers) with the current secret")
    p.add_argument("--stack", help="invoke the function of this deployed CloudFormation stack (Lambda API; "
                                   "function names from the stack outputs; usual AWS credentials)")
    p.add_argument("--region", help="AWS region of --stack (default: the AWS environment's)")
    p.set_defaults(func=cmd_invoke)
    p = command("migrate", "apply the SQL migrations (safe to run twice)",
                "Applies layers/core/smartpay/migrations in order, once each, and the repeatable grants; "
                "prints what it did. Exit 1 when an applied migration file was edited since, or the "
                "functions' roles are missing and this user may not create them (the SQL an administrator "
                "must run is printed).")
    p.set_defaults(func=cmd_migrate)


def cmd_invoke(args: argparse.Namespace) -> int:
    """Like ``sam local invoke FN -e event.json``: prints the function's result as JSON."""
    from smartpay_tools.local.lambda_runtime import InvocationError

    event = json.loads(Path(args.event).read_text()) if args.event else {}
    stack = stack_from_args(args)
    try:
        logical_id = stack.find_function(args.function)
    except KeyError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.stack:
        return _invoke_deployed(args, logical_id, event)
    if args.sign:
        from smartpay_tools.buffr_sim.webhook_sender import resign_event

        try:
            resign_event(event, webhook_secrets(stack))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    stack.simulator_port = 0  # a private simulator: never clashes with a running `smartpay serve`
    stack.start_services(migrate=not args.no_migrate)
    try:
        result = stack.invoke(logical_id, event)
        print(json.dumps(result, indent=2))
        return EXIT_OK
    except InvocationError as exc:
        print(json.dumps(exc.payload, indent=2))
        return EXIT_FAILED
    finally:
        stack.stop()


def _invoke_deployed(args: argparse.Namespace, logical_id: str, event: dict[str, Any]) -> int:
    """The same invocation against a deployed stack, through the Lambda API."""
    import botocore.exceptions

    from smartpay_tools.cli.deployed import DeployedStack

    try:
        deployed = DeployedStack.load(args.stack, args.region)
        ok, payload, logs = deployed.invoke(logical_id, event)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if logs:
        print(logs, file=sys.stderr)
    print(json.dumps(payload, indent=2))
    return EXIT_OK if ok else EXIT_FAILED




def cmd_migrate(args: argparse.Namespace) -> int:
    from smartpay import migrate

    stack = stack_from_args(args)
    stack.start_services(migrate=False, simulator=False)
    try:
        result = migrate.apply(stack.postgres.url)
        admin_sql = result.pop("admin_sql", None)
        print(json.dumps(result, indent=2))
        if admin_sql:
            print(f"\nroles missing: {', '.join(result['roles_missing'])}; this user may not create roles, so no "
                  "grants were applied. An administrator must run:\n", file=sys.stderr)
            print(admin_sql)
        return EXIT_FAILED if result["changed"] or admin_sql else EXIT_OK
    finally:
        stack.stop()
