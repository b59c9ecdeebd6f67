"""``smartpay``: the operator CLI (local stack, invoke, migrate, data).

Exit codes: 0 success, 1 the operation failed (e.g. a function error), 2 bad usage or input,
3 a dependency (database, moto, gateway) is unavailable.
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
    from smartpay_tools.stack import LocalStack

    return LocalStack(env_file_path=Path(args.env_vars) if args.env_vars else None,
                      database_url=args.database_url)


def cmd_serve(args: argparse.Namespace) -> int:
    from smartpay_tools.gateway import Gateway, docs_routes, serve

    stack = _stack(args).start_services()
    port = args.port or int(stack.local.get("GatewayPort", 3000))
    server = serve(Gateway(stack, extra_routes=docs_routes()), port=port)
    print(f"PostgreSQL: {stack.postgres.origin} ({_safe_url(stack.postgres.url)})")
    print(f"DynamoDB (moto): {stack.moto.endpoint}")
    print(f"API: http://127.0.0.1:{port}  routes:")
    for logical_id, spec in sorted(stack.functions.items()):
        for route in spec.routes:
            print(f"  {route.method:6} {route.path:45} -> {logical_id}")
    print(f"API document: http://127.0.0.1:{port}/openapi.json   Swagger UI: http://127.0.0.1:{port}/docs")
    print("Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        stack.stop()
    return EXIT_OK


def _safe_url(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(url)
    return f"{parts.get('host', '')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def cmd_invoke(args: argparse.Namespace) -> int:
    """Like ``sam local invoke FN -e event.json``: prints the function's result as JSON."""
    from smartpay_tools.lambda_runtime import InvocationError

    event = json.loads(Path(args.event).read_text()) if args.event else {}
    stack = _stack(args)
    try:
        logical_id = stack.find_function(args.function)
    except KeyError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
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


def cmd_migrate(args: argparse.Namespace) -> int:
    from smartpay import migrate

    stack = _stack(args)
    stack.start_services(migrate=False)
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
    from smartpay_tools import datagen

    out = Path(args.out)
    count = datagen.generate_file(out, args.count, args.seed)
    print(f"wrote {count} beneficiaries to {out}")
    return EXIT_OK


def cmd_import_beneficiaries(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from smartpay import migrate
    from smartpay_tools import registry_import

    stack = _stack(args)
    stack.start_services(migrate=False)
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
    for line, reason in report.rejected[:50]:
        print(f"  line {line}: {reason}")
    if len(report.rejected) > 50:
        print(f"  … and {len(report.rejected) - 50} more")
    return EXIT_OK if not report.rejected else EXIT_FAILED


def cmd_openapi(args: argparse.Namespace) -> int:
    """Export the API document, or (--check) fail when the committed file and the code disagree."""
    from smartpay_tools import openapi

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


def cmd_demo(args: argparse.Namespace) -> int:
    from smartpay_tools import demo

    stack = _stack(args)
    return demo.run(stack, port=args.port or int(stack.local.get("GatewayPort", 3000)),
                    beneficiaries=args.beneficiaries, keep_serving=args.serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartpay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-vars", default=os.environ.get("SMARTPAY_ENV_VARS"),
                        help="SAM env-vars file (default: env.local.json, as in samconfig.toml)")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL (default: DATABASE_URL, else 127.0.0.1:5432, else embedded)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the local stack: gateway on 127.0.0.1:3000, moto, PostgreSQL")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("invoke", help="invoke one function with an event file, like `sam local invoke`")
    p.add_argument("function", help="logical id (BeneficiariesFunction) or short name (beneficiaries)")
    p.add_argument("--event", "-e", help="event JSON file (e.g. events/beneficiaries/verify.json)")
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.set_defaults(func=cmd_invoke)

    p = sub.add_parser("migrate", help="apply the SQL migrations (safe to run twice)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("generate", help="write a synthetic beneficiary CSV")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", default="beneficiaries.csv")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("import-beneficiaries", help="upsert a beneficiary CSV into the registry")
    p.add_argument("csv")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_import_beneficiaries)
    p = sub.add_parser("openapi", help="export the combined OpenAPI document (or --check it)")
    p.add_argument("--out", default=str(PROJECT_ROOT / "openapi.json"))
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    p.set_defaults(func=cmd_openapi)

    p = sub.add_parser("demo", help="the main job: local stack, seeded registry, calls through the gateway")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--beneficiaries", type=int, default=5000)
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
