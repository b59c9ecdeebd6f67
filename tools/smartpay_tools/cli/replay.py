"""``smartpay replay``: send saved or stored Buffr webhooks again, re-signed (docs/architecture.md#webhook-signatures).

Sources: saved files (``events/webhooks/*.json``) or rows of ``webhook_events`` (filters: since,
voucher, outcome; the latest row per webhook id, in the order they were received). Each is
re-signed with the configured secret (a saved file may say ``"resign": false`` to be sent exactly
as captured, e.g. the bad-signature example) and keeps its webhook id and idempotency key, so a
replay of something already applied is answered from the idempotency store (or, after that
expired, by the state machine) and changes nothing.

Saved file format::

    {"description": "...", "headers": {"webhook-id": "msg_…", "webhook-timestamp": "…",
     "webhook-signature": "v1,…", "content-type": "application/json", "Idempotency-Key": "…"},
     "body": {...the payload...} | "raw text", "resign": true}
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, signed_headers
from smartpay_tools.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    stack_from_args,
    webhook_secrets,
)

_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Item:
    """One delivery to replay."""

    source: str
    webhook_id: str
    body: bytes
    idempotency_key: str | None = None
    resign: bool = True
    captured_headers: dict[str, str] = field(default_factory=dict)

    def headers(self, secrets: str) -> dict[str, str]:
        if not self.resign:
            return {"content-type": "application/json", **self.captured_headers}
        key = self.idempotency_key if self.idempotency_key and self.idempotency_key != self.webhook_id else None
        return signed_headers(secrets, self.body, webhook_id=self.webhook_id, idempotency_key=key)


@dataclass
class Result:
    item: Item
    status: int | None  # None: transport error
    outcome: str  # the reply's outcome, "replayed", "unauthorized", "invalid", "error"


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """``2026-11-02T08:00:00Z`` or a relative ``90m`` / ``6h`` / ``3d``."""
    if not value:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_files(paths: Iterable[Path]) -> list[Item]:
    """Saved deliveries, in file-name order within each argument (directories are expanded)."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    items = []
    for file in files:
        try:
            doc = json.loads(file.read_text())
            headers = {k.lower(): str(v) for k, v in doc["headers"].items()}
            body = doc["body"]
            items.append(Item(
                source=file.name, webhook_id=headers["webhook-id"], body=encode(body),
                idempotency_key=headers.get("idempotency-key") or headers.get("x-idempotency-key"),
                resign=bool(doc.get("resign", True)), captured_headers=headers,
            ))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{file}: not a saved webhook ({exc.__class__.__name__}: {exc})") from None
    return items


def from_rows(database_url: str, *, since: datetime | None = None, voucher: str | None = None,
              outcome: str | None = None, limit: int | None = None) -> list[Item]:
    """Stored deliveries: the latest row per webhook id matching the filters, oldest first."""
    import psycopg
    from psycopg.rows import dict_row

    where, params = ["true"], []
    if since is not None:
        where.append("received_at >= %s")
        params.append(since)
    if voucher:
        where.append("voucher_id = %s")
        params.append(voucher)
    if outcome:
        where.append("outcome = %s")
        params.append(outcome)
    sql = f"""SELECT * FROM (
                SELECT DISTINCT ON (webhook_id) id, webhook_id, idempotency_key, payload, received_at
                  FROM webhook_events WHERE {' AND '.join(where)}
                 ORDER BY webhook_id, received_at DESC, id DESC) latest
              ORDER BY received_at, id {'LIMIT %s' if limit else ''}"""
    if limit:
        params.append(limit)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(sql, params).fetchall()
    return [Item(source=f"webhook_events#{r['id']}", webhook_id=r["webhook_id"], body=encode(r["payload"]),
                 idempotency_key=r["idempotency_key"]) for r in rows]


def classify(status: int | None, reply: Any, replayed: bool) -> str:
    if status is None:
        return "error"
    if replayed:
        return "replayed"
    if isinstance(reply, dict) and isinstance(reply.get("outcome"), str):
        return reply["outcome"]
    if status == 401:
        return "unauthorized"
    if 400 <= status < 500:
        return "invalid"
    return "error" if status >= 500 else "ok"


Sender = Callable[[Item, dict[str, str]], tuple[int | None, Any, bool]]


def http_sender(url: str, client: httpx.Client | None = None) -> Sender:
    """POST to a gateway: the local one, or a deployed stage's base URL (the route is appended)."""
    target = url.rstrip("/")
    if not target.endswith(WEBHOOK_PATH):
        target += WEBHOOK_PATH
    http = client or httpx.Client(timeout=30)

    def send(item: Item, headers: dict[str, str]) -> tuple[int | None, Any, bool]:
        try:
            response = http.post(target, content=item.body, headers=headers)
        except httpx.HTTPError:
            return None, None, False
        try:
            reply = response.json()
        except ValueError:
            reply = None
        return response.status_code, reply, response.headers.get("idempotent-replayed") == "true"

    return send


def invoke_sender(stack: Any) -> Sender:
    """Invoke the webhook function directly through the local stack (no gateway)."""
    from smartpay_tools.local.events import api_event
    from smartpay_tools.local.lambda_runtime import InvocationError

    logical_id = stack.find_function("webhook")

    def send(item: Item, headers: dict[str, str]) -> tuple[int | None, Any, bool]:
        event = api_event("POST", WEBHOOK_PATH, headers=headers, body=item.body)
        try:
            result = stack.invoke(logical_id, event)
        except InvocationError:
            return None, None, False
        merged = {k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()}
        merged.update({k.lower(): v for k, v in (result.get("headers") or {}).items()})
        try:
            reply = json.loads(result.get("body") or "null")
        except ValueError:
            reply = None
        return int(result["statusCode"]), reply, merged.get("idempotent-replayed") == "true"

    return send


def run(items: list[Item], send: Sender, secrets: str, *, progress: Callable[[int], Any] | None = None
        ) -> list[Result]:
    """Send every item in order; never stops on a failed one."""
    results = []
    for item in items:
        status, reply, replayed = send(item, item.headers(secrets))
        results.append(Result(item, status, classify(status, reply, replayed)))
        if progress:
            progress(1)
    return results


def summary(results: list[Result]) -> tuple[Counter[str], Counter[str]]:
    """(by outcome, by HTTP status) counts."""
    return (Counter(r.outcome for r in results),
            Counter("error" if r.status is None else str(r.status) for r in results))


def add_commands(command: Any) -> None:
    """Register the command; ``command(name, help, description)`` makes a subcommand parser."""
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


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-send saved (events/webhooks) or stored (webhook_events) Buffr webhooks, re-signed."""
    from tqdm import tqdm

    from smartpay import signing
    from smartpay.errors import ConfigError
    from smartpay_tools.local.services import resolve_postgres

    if bool(args.files) == bool(args.from_db):
        print("error: give saved webhook files/directories, or --from-db (not both)", file=sys.stderr)
        return EXIT_USAGE
    stack = stack_from_args(args)
    try:
        secrets = webhook_secrets(stack)
        signing.parse_secrets(secrets)
        if args.files:
            items = from_files(Path(f) for f in args.files)
        else:
            file_url = stack.env_file.get("Parameters", {}).get("DATABASE_URL") or None
            postgres = resolve_postgres(args.database_url or os.environ.get("DATABASE_URL") or file_url)
            try:
                items = from_rows(postgres.url, since=parse_since(args.since),
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
        send = invoke_sender(stack)
    else:
        send = http_sender(args.url or f"http://127.0.0.1:{stack.local.get('GatewayPort', 3000)}")
    try:
        with tqdm(total=len(items), unit="webhook", desc="replay", disable=args.quiet) as bar:
            results = run(items, send, secrets, progress=bar.update)
    finally:
        if args.invoke:
            stack.stop()
    by_outcome, by_status = summary(results)
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
