"""``smartpay``: the operator CLI — local stack, functions, data, disbursement, webhooks.

Run ``smartpay COMMAND --help`` for each command's options. Exit codes: 0 success, 1 the
operation failed (e.g. a function error, vouchers failed or left pending), 2 bad usage or input,
3 a dependency (database, moto, gateway, API) is unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from smartpay_tools import PROJECT_ROOT

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _stack(args: argparse.Namespace) -> Any:
    from smartpay_tools.local.stack import LocalStack

    return LocalStack(env_file_path=Path(args.env_vars) if args.env_vars else None,
                      database_url=args.database_url)


def cmd_serve(args: argparse.Namespace) -> int:
    from smartpay_tools.local.gateway import Gateway, docs_routes, serve
    from smartpay_tools.local.scheduler import Scheduler

    stack = _stack(args)
    port = args.port or int(stack.local.get("GatewayPort", 3000))
    stack.webhook_url = f"http://127.0.0.1:{port}"
    stack.start_services()
    server = serve(Gateway(stack, extra_routes=docs_routes()), port=port)
    scheduler = None
    if not args.no_schedule:
        scheduler = Scheduler(stack.functions, stack.invoke, stack.region, rate_override=args.schedule_rate,
                              on_fire=lambda f: print(f"[schedule] {f.at:%H:%M:%S} {f.logical_id}: "
                                                      f"{json.dumps(f.result, default=str)[:300]}", flush=True))
        for logical_id, schedule, every in scheduler.schedules():
            print(f"Schedule: {logical_id} {schedule.event_name} every {every:g} s "
                  f"({args.schedule_rate or schedule.schedule})")
        scheduler.start()
    print(f"PostgreSQL: {stack.postgres.origin} ({_safe_url(stack.postgres.url)})")
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


def _database(args: argparse.Namespace) -> tuple[str, Any]:
    """The database the operator tools read (as ``smartpay report`` finds it) and how to let it go."""
    from smartpay_tools.local.services import resolve_postgres

    stack = _stack(args)
    file_url = stack.env_file.get("Parameters", {}).get("DATABASE_URL") or None
    postgres = resolve_postgres(stack.database_url or file_url)
    return postgres.url, postgres.stop


def _safe_url(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(url)
    return f"{parts.get('host', '')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def cmd_invoke(args: argparse.Namespace) -> int:
    """Like ``sam local invoke FN -e event.json``: prints the function's result as JSON."""
    from smartpay_tools.local.lambda_runtime import InvocationError

    event = json.loads(Path(args.event).read_text()) if args.event else {}
    stack = _stack(args)
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
            resign_event(event, _webhook_secrets(stack))
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

    stack = _stack(args)
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


def _print_rejected(rejected: list[tuple[int, str]]) -> None:
    for line, reason in rejected[:50]:
        print(f"  line {line}: {reason}")
    if len(rejected) > 50:
        print(f"  … and {len(rejected) - 50} more")


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
    stack = _stack(args)
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
    _print_rejected(report.rejected)
    return EXIT_OK if not report.rejected else EXIT_FAILED


def cmd_simulator(args: argparse.Namespace) -> int:
    """The Buffr simulator alone, in the foreground (``smartpay serve`` starts it too)."""
    from smartpay_tools.buffr_sim import server as buffr_sim
    from smartpay_tools.buffr_sim.webhook_sender import knobs_from_args, require_loopback
    from smartpay_tools.local.stack import LocalStack

    stack = LocalStack(env_file_path=Path(args.env_vars) if args.env_vars else None)
    port = args.port or int(stack.local.get("BuffrSimulatorPort", buffr_sim.DEFAULT_PORT))
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
    buffr_sim.serve(port=port, api_key=stack.buffr_api_key, config=buffr_sim.config_from_args(args),
                    webhook_url=url, webhook_secrets=secrets, knobs=knobs)
    return EXIT_OK


def cmd_import_beneficiaries(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from smartpay import migrate
    from smartpay_tools.data import registry_import

    stack = _stack(args)
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
    _print_rejected(report.rejected)
    return EXIT_OK if not report.rejected else EXIT_FAILED


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


def _webhook_secrets(stack: Any) -> str:
    """Signing secrets for replay: SMARTPAY_WEBHOOK_SECRET, else the env-vars file's WebhookFunction block."""
    value = stack.webhook_secrets
    if not value:
        raise ValueError("no webhook secret: set SMARTPAY_WEBHOOK_SECRET or WebhookFunction.WEBHOOK_SECRET "
                         "in the env-vars file")
    return value


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-send saved (events/webhooks) or stored (webhook_events) Buffr webhooks, re-signed."""
    from tqdm import tqdm

    from smartpay import signing
    from smartpay.errors import ConfigError
    from smartpay_tools.cli import replay
    from smartpay_tools.local.services import resolve_postgres

    if bool(args.files) == bool(args.from_db):
        print("error: give saved webhook files/directories, or --from-db (not both)", file=sys.stderr)
        return EXIT_USAGE
    stack = _stack(args)
    try:
        secrets = _webhook_secrets(stack)
        signing.parse_secrets(secrets)
        if args.files:
            items = replay.from_files(Path(f) for f in args.files)
        else:
            file_url = stack.env_file.get("Parameters", {}).get("DATABASE_URL") or None
            postgres = resolve_postgres(args.database_url or os.environ.get("DATABASE_URL") or file_url)
            try:
                items = replay.from_rows(postgres.url, since=replay.parse_since(args.since),
                                         voucher=args.voucher, outcome=args.outcome, limit=args.limit)
            finally:
                postgres.stop()
    except (ValueError, OSError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        for item in items:
            body = json.loads(item.body) if item.body.lstrip().startswith(b"{") else {}
            data = body.get("data") if isinstance(body.get("data"), dict) else {}
            print(f"{item.source:40} {item.webhook_id:36} {body.get('type')!s:22} "
                  f"{data.get('voucher_id')!s:36} {'re-signed' if item.resign else 'as captured'}")
        print(f"dry run: {len(items)} deliveries, nothing sent")
        return EXIT_OK
    if args.invoke:
        stack.simulator_port = 0
        stack.start_services(migrate=False)
        send = replay.invoke_sender(stack)
    else:
        send = replay.http_sender(args.url or f"http://127.0.0.1:{stack.local.get('GatewayPort', 3000)}")
    try:
        with tqdm(total=len(items), unit="webhook", desc="replay", disable=args.quiet) as bar:
            results = replay.run(items, send, secrets, progress=bar.update)
    finally:
        if args.invoke:
            stack.stop()
    by_outcome, by_status = replay.summary(results)
    print("outcomes: " + (", ".join(f"{k} {v}" for k, v in sorted(by_outcome.items())) or "none"))
    print("HTTP status: " + (", ".join(f"{k} x{v}" for k, v in sorted(by_status.items())) or "none"))
    for result in results:
        if result.outcome in {"error", "unauthorized", "invalid"}:
            print(f"  {result.item.source}: {result.status or 'no answer'} ({result.outcome})")
    if results and all(r.status is None for r in results):
        print("unavailable: nothing answered (is `smartpay serve` running, or the URL right?)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    failed = any(r.status is None or r.status >= 500 for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_disburse(args: argparse.Namespace) -> int:
    """Disburse a programme cycle through the API, call after call, until nothing is left."""
    from tqdm import tqdm

    from smartpay_tools.cli import disburse_cycle

    stack = _stack(args)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from smartpay_tools.demo import run as demo
    from smartpay_tools.local import envfile

    env_vars = Path(args.env_vars) if args.env_vars else None
    port = args.port or int(envfile.local_settings(envfile.load(env_vars)).get("GatewayPort", 3000))
    return demo.run(port=port, beneficiaries=args.beneficiaries, out_dir=Path(args.out),
                    database_url=args.database_url, keep_serving=args.serve, env_vars=env_vars,
                    database_name=args.database_name)


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

    from smartpay_tools.cli import keys
    from smartpay_tools.cli import reconcile as recon_cli
    from smartpay_tools.data import saved_events

    recon_cli.add_commands(command, _stack)
    keys.add_commands(command)
    saved_events.add_commands(command, _stack)

    from smartpay_tools.cli import compliance as compliance_cli

    compliance_cli.add_audit_command(command, _database)

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

    p = command("generate", "write a synthetic beneficiary (or payroll) CSV",
                "Fake but valid ID numbers, names and phone numbers; the same seed gives the same file.")
    p.add_argument("--count", type=int, default=5000, help="rows to write (default 5000)")
    p.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    p.add_argument("--out", default="beneficiaries.csv", help="output file (default beneficiaries.csv)")
    p.add_argument("--payroll-cycle", default=None, metavar="YYYY-MM",
                   help="write a payroll CSV for this cycle instead of a registry CSV")
    p.set_defaults(func=cmd_generate)

    p = command("import-payroll", "import a payroll CSV: upsert beneficiaries, issue vouchers",
                "Chunked and re-runnable: a second run issues nothing new. Rejected rows are listed with line "
                "and reason (exit 1).")
    p.add_argument("csv", help="payroll CSV (see `smartpay generate --payroll-cycle`)")
    p.add_argument("--expires-at", default=None, help="ISO-8601 expiry (default: start of cycle month + 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import_payroll)

    p = command("simulator", "run the Buffr simulator (default 127.0.0.1:4010) until Ctrl-C",
                "Buffr's disburse and status endpoints on loopback; after each credit it sends "
                       "signed webhooks to the gateway (knobs: flags, else the env file's LocalStack.BuffrWebhooks; "
                       "change them at run time with PUT /_sim/config).")
    p.add_argument("--port", type=int, default=None, help="default: LocalStack.BuffrSimulatorPort (4010)")
    from smartpay_tools.buffr_sim.server import add_fault_arguments

    add_fault_arguments(p)
    p.set_defaults(func=cmd_simulator)

    p = command("import-beneficiaries", "upsert a beneficiary CSV into the registry",
                "COPY into a staging table, then one upsert per chunk; rejected rows listed (exit 1).")
    p.add_argument("csv", help="registry CSV (see `smartpay generate`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import_beneficiaries)
    p = command("openapi", "export the combined OpenAPI document (or --check it)",
                "Generated from the functions' resolvers, with the security schemes.")
    p.add_argument("--out", default=str(PROJECT_ROOT / "openapi.json"), help="file to write or check")
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    p.set_defaults(func=cmd_openapi)
    p = command("replay", "re-send saved or stored Buffr webhooks, re-signed with the current secret",
                "Each keeps its webhook id, so replaying what was already applied changes nothing. Exit 1 if "
                "any got a 5xx or no answer, 3 if nothing answered.")
    p.add_argument("files", nargs="*", help="saved webhook files or directories (e.g. events/webhooks)")
    p.add_argument("--from-db", action="store_true", help="replay stored webhook_events rows instead")
    p.add_argument("--since", help="with --from-db: received at or after (ISO-8601, or 90m / 6h / 3d)")
    p.add_argument("--voucher", help="with --from-db: only this voucher id")
    p.add_argument("--outcome", choices=["applied", "duplicate", "stale", "ignored", "rejected"],
                   help="with --from-db: only rows with this outcome")
    p.add_argument("--limit", type=int, default=None, help="with --from-db: at most this many rows")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--url", help="gateway or deployed stage base URL (default: the local gateway)")
    target.add_argument("--invoke", action="store_true",
                        help="invoke the webhook function directly through the local stack")
    p.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

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

    p = command("demo", "the main job: a whole pay cycle on the local stack (issue, disburse, webhooks with "
                        "faults, reconciliation) and its end-of-cycle report (text, CSV, HTML)")
    p.add_argument("--port", type=int, default=None, help="gateway port (default: LocalStack.GatewayPort, 3000)")
    p.add_argument("--beneficiaries", type=int, default=5000, help="registry size to generate (default 5000)")
    p.add_argument("--out", default=str(PROJECT_ROOT / "reports"), help="where the CSV and HTML reports go")
    p.add_argument("--database-name", default="smartpay_demo",
                   help="the demo's own database, dropped and re-created at each run (default smartpay_demo)")
    p.add_argument("--serve", action="store_true", help="keep serving after the demo")
    p.set_defaults(func=cmd_demo)
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
