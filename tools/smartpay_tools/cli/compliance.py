"""``smartpay report --compliance`` and ``smartpay audit verify``: the auditor's commands.

Both connect as the read-only ``auditor`` role (docs/operations.md "Compliance report and audit
verification"): an auditor needs no write role, and the commands prove it each time they run.
The logic lives in the layer (:mod:`smartpay.compliance`, :mod:`smartpay.audit_chain`), shared
with the reconcile function; this module only parses, connects and writes files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
AUDITOR = "auditor"


def auditor_url(url: str) -> str:
    """The same database, as the read-only ``auditor`` role: a URL that already names the auditor
    (a deployed database, with its password) is used as it is; otherwise the role is swapped in
    without a password (the local server's trust authentication)."""
    import psycopg

    from smartpay_tools.local.services import url_as

    if psycopg.conninfo.conninfo_to_dict(url).get("user") == AUDITOR:
        return url
    return url_as(url, AUDITOR)


def parse_since(value: str) -> datetime:
    """ISO-8601 (a zone, else UTC) or a duration back from now: ``90m``, ``6h``, ``3d``."""
    match = re.fullmatch(r"(\d+)([mhd])", value.strip())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def database_from_args(args: argparse.Namespace) -> tuple[str, Any]:
    """The database the operator tools read (as ``smartpay report`` finds it) and how to let it go."""
    from smartpay_tools.cli.common import stack_from_args
    from smartpay_tools.local.services import resolve_postgres

    stack = stack_from_args(args)
    file_url = stack.env_file.get("Parameters", {}).get("DATABASE_URL") or None
    postgres = resolve_postgres(stack.database_url or file_url)
    return postgres.url, postgres.stop


def add_audit_command(command: Any, url_factory: Any) -> None:
    """``smartpay audit verify``; ``url_factory(args)`` gives (database URL, stop callback)."""
    p = command("audit", "check the tamper-evident audit trail (hash chains of voucher_events)",
                "verify: recompute every audit row's SHA-256 chain in Python, independently of the database, "
                "as the read-only auditor role. Exit 0 with the head hash; 1 naming the first broken row.")
    verbs = p.add_subparsers(dest="audit_command", required=True, metavar="VERB", help="verify")
    v = verbs.add_parser("verify", help="recompute the chains; print the head or the first broken row")
    v.add_argument("--programme", help="only this programme's vouchers (with --cycle: one programme cycle)")
    v.add_argument("--cycle", metavar="YYYY-MM", help="only this cycle's vouchers")
    v.add_argument("--since", help="recompute only rows written since (ISO-8601, or 90m / 6h / 3d)")
    v.add_argument("--upto", type=int, metavar="ROW",
                   help="count only rows with id <= ROW (the last_event_id a compliance report printed)")
    v.add_argument("--anchors", action="store_true",
                   help="also compare every anchor in the anchor bucket (S3, Object Lock) with the heads "
                        "recomputed as of its row: catches history rewritten with every later hash recomputed")
    v.add_argument("--anchors-since", metavar="WHEN",
                   help="with --anchors: only anchors written since (ISO-8601, or 90m / 6h / 3d)")
    v.add_argument("--anchor-bucket", metavar="BUCKET",
                   help="the anchor bucket (default: $AUDIT_ANCHOR_BUCKET; endpoint: $AWS_ENDPOINT_URL)")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=lambda args: cmd_audit_verify(args, *url_factory(args)))


def read_anchors(bucket: str | None, client: Any = None) -> tuple[str, list[dict[str, Any]]]:
    """(bucket, every anchor in it); the bucket from the argument or $AUDIT_ANCHOR_BUCKET, the
    endpoint from the environment ($AWS_ENDPOINT_URL: the local stack's moto) unless ``client``."""
    import os

    from smartpay import anchors

    bucket = bucket or os.environ.get("AUDIT_ANCHOR_BUCKET", "")
    if not bucket:
        raise ValueError("no anchor bucket: pass --anchor-bucket or set AUDIT_ANCHOR_BUCKET")
    return bucket, anchors.read_all(client or anchors.s3_client(), bucket)


def cmd_audit_verify(args: argparse.Namespace, url: str, stop: Any = None) -> int:
    import psycopg

    from smartpay import anchors, audit_chain

    try:
        since = parse_since(args.since) if args.since else None
        anchors_since = parse_since(args.anchors_since) if getattr(args, "anchors_since", None) else None
    except ValueError:
        print("error: --since / --anchors-since take ISO-8601 or 90m / 6h / 3d", file=sys.stderr)
        return EXIT_USAGE
    use_anchors = bool(getattr(args, "anchors", False))
    checked = None
    try:
        if use_anchors:
            try:
                bucket, found = read_anchors(getattr(args, "anchor_bucket", None), getattr(args, "s3", None))
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            if anchors_since is not None:
                found = [a for a in found if datetime.fromisoformat(a["written_at"]) >= anchors_since]
        with psycopg.connect(auditor_url(url), autocommit=True) as conn:
            result = audit_chain.verify(conn, programme=args.programme, cycle=args.cycle, since=since,
                                        upto=args.upto)
            if use_anchors and result.ok:
                checked = anchors.check(conn, found)
    finally:
        if stop:
            stop()
    scope = " ".join(x for x in (args.programme, args.cycle) if x) or "all vouchers"
    ok = result.ok and (checked is None or checked.ok) and not (use_anchors and checked is None)
    if args.json:
        print(json.dumps({"scope": scope, **result.as_dict(),
                          **({"anchors": checked.as_dict()} if checked is not None else {})}, indent=2))
        return EXIT_OK if ok else EXIT_FAILED
    if result.ok:
        print(f"audit chain OK: {result.checked:,} of {result.events:,} rows recomputed over {result.vouchers:,} "
              f"vouchers ({scope}{', since ' + since.isoformat() if since else ''})")
        print(f"head {result.head}  (up to voucher_events row {result.last_event_id})")
    else:
        print(f"audit chain BROKEN ({scope}): {result.broken}", file=sys.stderr)
    if checked is not None and checked.ok:
        latest = checked.latest
        print(f"anchors OK: {checked.checked} of s3://{bucket} agree with the recomputed heads"
              + (f"; latest {latest['key']} (up to row {latest['upto_event_id']}, written {latest['written_at']})"
                 if latest else " (none written yet)"))
    elif checked is not None:
        bad = checked.disagreeing or {}
        print(f"anchors DISAGREE: s3://{bucket}/{bad.get('key')} (up to row {bad.get('upto_event_id')}, written "
              f"{bad.get('written_at')}): {checked.reason}; history before it was rewritten", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """The compliance options of ``smartpay report`` (its ``--json`` and ``--csv`` take a file too)."""
    p.add_argument("--compliance", action="store_true",
                   help="the auditor's compliance report of --programme/--cycle (as the read-only auditor role)")
    p.add_argument("--html", help="with --compliance: write the self-contained HTML page to this file")
    p.add_argument("--metrics-log", action="append", default=[],
                   help="with --compliance: function log file(s) with EMF metric lines, for the idempotency "
                        "hit rates (repeatable)")
    p.add_argument("--cloudwatch", action="store_true",
                   help="with --compliance: read the idempotency hit rates from CloudWatch (deployed stack)")
    p.add_argument("--anchor-bucket", metavar="BUCKET",
                   help="with --compliance: name the latest audit anchor of this bucket the database agrees "
                        "with (default: $AUDIT_ANCHOR_BUCKET; none: the report says no bucket is configured)")


def cmd_report(args: argparse.Namespace, url: str, stop: Any = None) -> int:
    """``report --compliance``: text on stdout; --json / --csv / --html FILE ('-' = stdout)."""
    import psycopg

    from smartpay import compliance, compliance_render
    from smartpay.observability import NAMESPACE

    if not args.cycle:
        print("error: --compliance needs --cycle (and --programme)", file=sys.stderr)
        return EXIT_USAGE
    metrics = None
    if args.metrics_log:
        lines: list[str] = []
        for path in args.metrics_log:
            lines += Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
        metrics = compliance.emf_totals(lines)
    elif args.cloudwatch:
        import boto3

        metrics = compliance.cloudwatch_totals(boto3.client("cloudwatch"), NAMESPACE, compliance.ROUTE_SERVICES)
    import os

    found = None
    if getattr(args, "anchor_bucket", None) or os.environ.get("AUDIT_ANCHOR_BUCKET"):
        found = read_anchors(getattr(args, "anchor_bucket", None))[1]
    try:
        with psycopg.connect(auditor_url(url), autocommit=True) as conn:
            report = compliance.report(conn, args.programme, args.cycle, metrics=metrics, anchors=found)
    finally:
        if stop:
            stop()
    outputs = {"json": lambda r: json.dumps(r, indent=2) + "\n", "csv": compliance_render.to_csv,
               "html": compliance_render.to_html}
    to_stdout = False
    for key, render in outputs.items():
        target = getattr(args, key, None)
        if target in (None, False):
            continue
        if target in ("-", True):
            sys.stdout.write(render(report))
            to_stdout = True
        else:
            Path(target).write_text(render(report), encoding="utf-8")
            print(f"wrote {target}", file=sys.stderr)
    if not to_stdout:
        print(compliance_render.to_text(report), end="")
    return EXIT_OK if all(compliance.checks(report).values()) else EXIT_FAILED
