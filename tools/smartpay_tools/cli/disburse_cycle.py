"""``smartpay disburse``: send a whole programme cycle to Buffr through the API, resumably.

Calls ``POST /api/v1/disbursements {"programme", "cycle", "limit"}`` again and again. Each call
disburses what it can before its Lambda deadline and answers with per-voucher results, the ids
it did not attempt and the number still ``issued``/``pending`` in the cycle; the next call picks
up from there (the function selects open vouchers itself, so a second run of this command, or a
run after a crash, only sends what is left — and the disburse endpoint is idempotent per voucher
anyway). Stops when nothing is left, when ``--limit`` is reached, or when a whole call made no
progress (every voucher it tried stayed ``pending``: Buffr is not answering), so it never spins.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PATH = "/api/v1/disbursements"
TRANSIENT = frozenset({429, 502, 503, 504})


class Unavailable(Exception):
    """The API (or the database/Buffr behind it) did not answer usably; nothing more can be done now."""


class Refused(Exception):
    """The API refused the request itself (bad key, scope, programme or cycle)."""


@dataclass
class Summary:
    calls: int = 0
    attempted: int = 0
    remaining: int | None = None  # left to pay in the cycle after the last call (see the API's `remaining`)
    stopped: str = ""  # why the loop ended
    last: dict[str, str] = field(default_factory=dict)  # voucher id -> its latest outcome in a reply

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(self.last.values())

    @property
    def complete(self) -> bool:
        """Everything asked for went through: nothing failed, nothing left pending."""
        counts = self.outcomes
        return not counts["failed"] and not counts["pending"] and self.stopped in {"done", "limit"}


def run(url: str, api_key: str, programme: str, cycle: str, *, limit: int | None = None, batch_size: int = 1000,
        timeout_s: float = 120.0, retries: int = 3, progress: Callable[[int, int | None], None] | None = None,
        client: httpx.Client | None = None) -> Summary:
    """Disburse the cycle (at most ``limit`` vouchers), ``batch_size`` per call; see the module doc."""
    summary = Summary()
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    try:
        while True:
            size = batch_size if limit is None else min(batch_size, limit - summary.attempted)
            if size <= 0:
                summary.stopped = "limit"
                break
            body = _call(http, url.rstrip("/") + PATH, api_key,
                         {"programme": programme, "cycle": cycle, "limit": size}, retries)
            summary.calls += 1
            summary.attempted += int(body["attempted"])
            summary.remaining = body.get("remaining")
            summary.last.update({r["voucher_id"]: r["outcome"] for r in body["results"]})
            if progress is not None:
                total = None if summary.remaining is None else summary.attempted + summary.remaining
                progress(int(body["attempted"]), total if limit is None else min(limit, total or limit))
            if body["requested"] == 0 or summary.remaining == 0:
                summary.stopped = "done"
                break
            if body["succeeded"] + body["failed"] + body["skipped"] + body.get("ineligible", 0) == 0:
                summary.stopped = "no progress"  # all pending (Buffr down) or nothing fitted the deadline
                break
    finally:
        if own:
            http.close()
    return summary


def _call(http: httpx.Client, url: str, api_key: str, body: dict[str, Any], retries: int) -> dict[str, Any]:
    """One batch call; transient answers (429/502/503/504, transport errors) retried with backoff."""
    problem = ""
    for attempt in range(retries):
        try:
            reply = http.post(url, json=body, headers={"x-api-key": api_key})
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if reply.status_code == 200:
                return dict(reply.json())
            detail = _detail(reply)
            if reply.status_code not in TRANSIENT:
                raise Refused(f"{reply.status_code}: {detail}")
            problem = f"{reply.status_code}: {detail}"
            wait = reply.headers.get("Retry-After")
            if wait and wait.isdigit():
                time.sleep(min(int(wait), 10))
                continue
        time.sleep(min(0.5 * 2**attempt, 5))
    raise Unavailable(f"{url} did not answer usably after {retries} tries ({problem})")


def _detail(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:200]
    if isinstance(body, dict):
        errors = "; ".join(f"{e.get('location')}: {e.get('message')}" for e in body.get("errors") or [])
        return str(body.get("detail") or body.get("message") or body) + (f" ({errors})" if errors else "")
    return str(body)[:200]
