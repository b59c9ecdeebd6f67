"""``smartpay cycle start|supplementary|approve|status|pause|resume|cancel``: the one way to pay, driven by the API.

``start`` prepares the cycle's run (``POST /api/v1/cycles/{programme}/{cycle}/disbursement`` with
an Idempotency-Key, as the maker) and prints what it would send; ``supplementary`` prepares a
supplementary run of the cycle (``--voucher-id`` …, or ``--held-eligible-again``); ``approve``
releases the run it names (``--run-id`` and ``--fingerprint``, as printed by ``start`` or
``status``; another principal holding ``cycles:approve``; the API refuses the maker and any other
run or fingerprint); SQS and the disburse function then carry it (locally: ``smartpay serve``
polls the queue as Lambda does). ``status --watch`` follows the progress until the run completes
or is paused. ``start --approve-with KEY`` does both steps, for the demo and scripts that hold
both keys. ``cancel`` ends a paused run for good (four eyes again: neither its maker nor whoever
paused it; what it did not send stays issued).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
FINISHED = frozenset({"completed", "expired", "cancelled"})


class Refused(Exception):
    """The API said no (4xx): the problem's detail says why."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('title', '')}: {body.get('detail') or body.get('message') or body}")
        self.status, self.body = status, body


class CycleApi:
    """The cycle-run routes of one programme cycle, over HTTP."""

    def __init__(self, url: str, programme: str, cycle: str, *, timeout_s: float = 60.0) -> None:
        self.path = f"{url.rstrip('/')}/api/v1/cycles/{programme}/{cycle}/disbursement"
        self.http = httpx.Client(timeout=timeout_s)

    def _send(self, method: str, action: str, api_key: str, headers: dict[str, str] | None = None,
              body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.path + (f"/{action}" if action else "")
        reply = self.http.request(method, url, headers={"x-api-key": api_key, **(headers or {})}, json=body)
        try:
            body = reply.json()
        except ValueError:
            body = {"detail": reply.text[:300]}
        if reply.status_code >= 400:
            raise Refused(reply.status_code, body if isinstance(body, dict) else {"detail": str(body)})
        return dict(body)

    def prepare(self, api_key: str, key: str) -> dict[str, Any]:
        return self._send("POST", "", api_key, {"Idempotency-Key": key})

    def supplementary(self, api_key: str, key: str, selection: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "supplementary", api_key, {"Idempotency-Key": key}, selection)

    def approve(self, api_key: str, run_id: str, fingerprint: str) -> dict[str, Any]:
        """Approve exactly the run reviewed (its id and fingerprint)."""
        return self._send("POST", "approve", api_key, body={"run_id": run_id, "fingerprint": fingerprint})

    def pause(self, api_key: str) -> dict[str, Any]:
        return self._send("POST", "pause", api_key)

    def resume(self, api_key: str) -> dict[str, Any]:
        return self._send("POST", "resume", api_key)

    def cancel(self, api_key: str) -> dict[str, Any]:
        return self._send("POST", "cancel", api_key)

    def status(self, api_key: str) -> dict[str, Any]:
        return self._send("GET", "", api_key)

    def watch(self, api_key: str, *, every_s: float = 1.0, timeout_s: float | None = None,
              on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the run is finished or paused (or ``timeout_s``); the last status."""
        ends = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            run = self.status(api_key)
            if on_progress is not None:
                on_progress(run)
            if run["status"] in FINISHED | {"paused", "awaiting_approval"}:
                return run
            if ends is not None and time.monotonic() >= ends:
                return run
            time.sleep(every_s)

    def close(self) -> None:
        self.http.close()


def describe(run: dict[str, Any]) -> str:
    """A few readable lines about a run (what it sends, who, where it stands)."""
    lines = [f"run {run['run_id']}  {run['programme']} {run['cycle']}  {run.get('kind', 'cycle')}  "
             f"status: {run['status']}",
             f"  fingerprint {run['fingerprint']}",
             f"  {run['voucher_count']} vouchers, N$ {run['total_amount_cents'] / 100:,.2f}; maker "
             f"{run['maker']['principal']} ({run['maker']['key_id']})"
             + (f", checker {run['checker']['principal']} ({run['checker']['key_id']})" if run.get("checker") else "")]
    regions = ", ".join(f"{r['region']} {r['vouchers']}" for r in run["region_totals"])
    lines.append(f"  regions: {regions}")
    if run["exceptions"]["total"]:
        lines.append(f"  left out (not eligible now): {run['exceptions']['total']} "
                     + json.dumps(run["exceptions"]["by_reason"]))
    progress = run.get("progress")
    if progress:
        lines.append(progress_line(progress))
    return "\n".join(lines)


def progress_line(p: dict[str, Any]) -> str:
    eta = f"{p['eta_s']:.0f} s" if p.get("eta_s") is not None else "-"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(p["errors"].items())) or "none"
    return (f"  queued {p['queued']}  sent {p['sent']}  active {p['active']}  pending {p['pending']}  "
            f"failed {p['failed']}  held {p['held']}  | {p['rate_per_s']:.0f}/s  ETA {eta}  "
            f"| Buffr calls {p['buffr_calls']} (retries {p['retries']})  errors: {errors}")


def add_commands(command: Any, stack_factory: Any) -> None:
    """Register ``smartpay cycle …`` (``command(name, help, description)`` makes a subcommand parser)."""
    p = command("cycle", "pay a programme cycle as a run (the one way to pay): start (prepare), supplementary, "
                         "approve, status, pause, resume, cancel",
                "Four eyes: start prepares the run as the maker; approve must come from another principal "
                "holding cycles:approve. Then the cycle queue and the disburse function carry it at Buffr's "
                "agreed rate. Exit codes: 0 done, 1 run not completed, 2 refused, 3 API unavailable.")
    p.add_argument("action", choices=("start", "supplementary", "approve", "status", "pause", "resume", "cancel"),
                   help="start: prepare the cycle's run (maker); supplementary: prepare a supplementary run "
                        "(maker); approve: release the run named (checker); status: progress; pause / resume; "
                        "cancel: end a paused run (another principal, cycles:approve)")
    p.add_argument("--programme", required=True, help="programme code, e.g. old_age")
    p.add_argument("--cycle", required=True, metavar="YYYY-MM", help="pay cycle, e.g. 2026-11")
    p.add_argument("--url", default=None, help="API base URL (default: the local gateway, LocalStack.GatewayPort)")
    p.add_argument("--api-key", default=None,
                   help="the caller's key (default: $SMARTPAY_API_KEY, else the env file's OperatorApiKey; "
                        "approve, cancel: SupervisorApiKey)")
    p.add_argument("--key", default=None,
                   help="start: the Idempotency-Key (default: cycle-<programme>-<cycle>-<UTC date>; give a new "
                        "one to prepare again after the cycle changed)")
    p.add_argument("--voucher-id", action="append", default=None, metavar="UUID",
                   help="supplementary: a voucher to pay (issued or held, of this cycle); repeat for more")
    p.add_argument("--held-eligible-again", action="store_true",
                   help="supplementary: the cycle's held vouchers whose beneficiary is eligible again")
    p.add_argument("--run-id", default=None, help="approve: the run reviewed (as printed by start / status)")
    p.add_argument("--fingerprint", default=None, help="approve: the fingerprint reviewed (start / status)")
    p.add_argument("--approve-with", default=None, metavar="API_KEY",
                   help="start / supplementary: approve the run just prepared with this (other principal's) "
                        "key, then watch")
    p.add_argument("--watch", action="store_true", help="status/approve/resume: follow until done or paused")
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.set_defaults(func=lambda args: cmd_cycle(args, stack_factory(args)))


def _key_for(args: argparse.Namespace, stack: Any, action: str) -> str:
    if args.api_key or os.environ.get("SMARTPAY_API_KEY"):
        return str(args.api_key or os.environ["SMARTPAY_API_KEY"])
    return str(stack.local.get("SupervisorApiKey" if action in ("approve", "cancel") else "OperatorApiKey") or "")


def cmd_cycle(args: argparse.Namespace, stack: Any) -> int:
    api = CycleApi(args.url or stack.gateway_url, args.programme, args.cycle)
    key = _key_for(args, stack, args.action)
    show = (lambda run: print(json.dumps(run, indent=2))) if args.json else (lambda run: print(describe(run)))
    try:
        if args.action in ("start", "supplementary"):
            if args.action == "start":
                idem = args.key or f"cycle-{args.programme}-{args.cycle}-{datetime.now(UTC):%Y%m%d}"
                run = api.prepare(key, idem)
            else:
                if bool(args.voucher_id) == args.held_eligible_again:
                    print("supplementary: give --voucher-id … or --held-eligible-again", file=sys.stderr)
                    return EXIT_USAGE
                selection = ({"voucher_ids": args.voucher_id} if args.voucher_id
                             else {"held_eligible_again": True})
                idem = args.key or f"supplementary-{args.programme}-{args.cycle}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
                run = api.supplementary(key, idem, selection)
            show(run)
            if not args.approve_with:
                print(f"awaiting approval by another principal: smartpay cycle approve --programme "
                      f"{args.programme} --cycle {args.cycle} --run-id {run['run_id']} "
                      f"--fingerprint {run['fingerprint']}", file=sys.stderr)
                return EXIT_OK
            run = api.approve(args.approve_with, run["run_id"], run["fingerprint"])
            args.watch = True
        elif args.action == "approve":
            if not (args.run_id and args.fingerprint):
                print("approve: give --run-id and --fingerprint of the run you reviewed "
                      "(smartpay cycle status prints them)", file=sys.stderr)
                return EXIT_USAGE
            run = api.approve(key, args.run_id, args.fingerprint)
        elif args.action == "pause":
            run = api.pause(key)
        elif args.action == "resume":
            run = api.resume(key)
        elif args.action == "cancel":
            run = api.cancel(key)
        else:
            run = api.status(key)
        if args.watch:
            run = api.watch(key if args.action != "approve" else _key_for(args, stack, "status"),
                            on_progress=None if args.json else lambda r: print(
                                f"{r['status']:>10} " + progress_line(r["progress"]).strip()
                                if r.get("progress") else r["status"], flush=True))
        show(run)
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except httpx.HTTPError as exc:
        print(f"unavailable: {type(exc).__name__}: {exc} (is `smartpay serve` running?)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        api.close()
    if args.watch and run["status"] != "completed":
        return EXIT_FAILED
    return EXIT_OK
