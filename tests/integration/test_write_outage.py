"""Database outages on every write route, through the local gateway (real HTTP, real workers).

While a thread terminates the stack database's server connections every ~150 ms
(``pg_terminate_backend``, as a failover or a proxy restart would), callers keep sending the same
request (same Idempotency-Key / voucher / webhook id) until it succeeds. Each test then proves:

* never a 500: every reply is the success, a 503 with Retry-After, or a 409 in-progress with
  Retry-After (a retry racing its own earlier attempt); at least one 503 happened (an outage was
  really hit mid-request, so the test cannot pass vacuously);
* no partial state: every voucher's status is the last step of its audit trail, a pending voucher
  has its recorded attempt, an applied webhook event has its effect (and no effect lacks its event);
* the functions' connection pools recover without a restart (no worker replaced);
* retrying converges to exactly one effect each (one voucher per key, one Buffr credit per
  voucher, Buffr calls = credits + duplicates refused, one applied webhook per id).

Only this session's test database is touched: the killer filters ``pg_stat_activity`` by its
name and spares its own and the test's connections (other runs share the server).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, payload, signed_headers
from tests import factories

pytestmark = pytest.mark.integration

KILL_EVERY_S = 0.15
STORM_SECONDS = 6.0  # how long callers keep retrying under the killer (bounded per item below too)
MAX_ATTEMPTS = 60  # per item, storm and recovery together
CLIENTS = 4  # = the local stack's max_concurrency per function
ITEMS = 40  # more than the storm gets through (requests wait out the pool while it reconnects)


class Killer:
    """Terminates the server connections of one database (not ``spare``) every ``every`` seconds."""

    def __init__(self, url: str, spare: set[int], every: float = KILL_EVERY_S, max_seconds: float = 60.0) -> None:
        self.url, self.spare, self.every, self.max_seconds = url, spare, every, max_seconds
        self.killed = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-killer", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(self.every) and time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> ALL(%s)",
                    (sorted(self.spare),)).fetchone()
                self.killed += int(row[0])
                self.rounds += 1

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


@contextmanager
def workers_not_restarted(local_stack: Any, logical_id: str, warm_up: Callable[[], httpx.Response]) -> Iterator[None]:
    """Warm the function's workers first (a cold start is not what is measured), then check that
    they all survive the outage: the connection pools recover without restarting a worker."""
    pool = local_stack.pool(logical_id)
    with ThreadPoolExecutor(CLIENTS) as threads:
        assert all(r.status_code < 500 for r in threads.map(lambda _: warm_up(), range(2 * CLIENTS)))
    before, idle = pool.cold_starts, len(pool._idle)
    yield
    started = pool.cold_starts - before
    assert started <= pool.max_concurrency - idle, f"{started} workers started: one was replaced"


class Outcomes:
    """Every reply seen, checked as it arrives: the success, a 503 / 409 with Retry-After, nothing else."""

    def __init__(self, success: int) -> None:
        self.success = success
        self.statuses: Counter[int] = Counter()
        self.bad: list[str] = []
        self._lock = threading.Lock()

    def record(self, reply: httpx.Response) -> bool:
        with self._lock:
            self.statuses[reply.status_code] += 1
            if reply.status_code == self.success:
                return True
            retryable = reply.status_code in (503, 409) and reply.headers.get("retry-after", "").isdigit() and \
                reply.headers.get("content-type") == "application/problem+json"
            if not retryable:
                self.bad.append(f"{reply.status_code} {reply.headers.get('content-type')} {reply.text[:300]}")
            return False


def retry_until_done(items: list[Any], send: Callable[[httpx.Client, Any], httpx.Response],
                     done: Callable[[httpx.Response], bool], outcomes: Outcomes, pg_url: str,
                     spare: set[int]) -> dict[Any, httpx.Response]:
    """Callers take items in turn and re-send each (same identity) until ``done``, for
    STORM_SECONDS under the killer (more items than that needs, so the load lasts the storm);
    then every item started is finished without the killer. Returns the started items' replies."""
    finished: dict[Any, httpx.Response] = {}
    attempts: Counter[Any] = Counter()
    started: list[Any] = []
    pending = iter(items)
    lock = threading.Lock()

    def drive(client: httpx.Client, item: Any, until: float) -> None:
        while item not in finished and attempts[item] < MAX_ATTEMPTS and time.monotonic() < until:
            attempts[item] += 1
            reply = send(client, item)
            if outcomes.record(reply) and done(reply):
                finished[item] = reply
            elif reply.status_code in (503, 409):
                time.sleep(0.05)  # a real client waits Retry-After; the storm keeps it short

    def caller(client: httpx.Client, until: float) -> None:
        while time.monotonic() < until:
            with lock:
                item = next(pending, None)
                if item is None:
                    return
                started.append(item)
            drive(client, item, until)

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(CLIENTS) as pool:
        with Killer(pg_url, spare) as killer:
            until = time.monotonic() + STORM_SECONDS
            list(pool.map(lambda _: caller(client, until), range(CLIENTS)))
        assert killer.rounds >= 3 and killer.killed > 0, "the killer never ran: nothing was tested"
        until = time.monotonic() + 60  # recovery: the same requests again, database healthy
        list(pool.map(lambda item: drive(client, item, until), list(started)))
    assert not outcomes.bad, f"replies other than success / 503 / 409 under the outage: {outcomes.bad[:5]}"
    assert set(finished) == set(started), f"did not converge: {len(started) - len(finished)} items unfinished"
    assert outcomes.statuses[503] > 0, f"no request was cut mid-way (statuses {dict(outcomes.statuses)})"
    return finished


def assert_audit_complete(pg: psycopg.Connection[Any]) -> None:
    """Every voucher's status is the last step of its audit trail, which starts at issue."""
    broken = pg.execute(
        """SELECT v.id, v.status, e.to_status AS last, f.from_status AS first_from, f.to_status AS first_to
             FROM vouchers v
             LEFT JOIN LATERAL (SELECT to_status FROM voucher_events WHERE voucher_id = v.id
                                ORDER BY id DESC LIMIT 1) e ON true
             LEFT JOIN LATERAL (SELECT from_status, to_status FROM voucher_events WHERE voucher_id = v.id
                                ORDER BY id LIMIT 1) f ON true
            WHERE e.to_status IS DISTINCT FROM v.status OR f.from_status IS NOT NULL
               OR f.to_status IS DISTINCT FROM 'issued'""").fetchall()
    assert broken == [], f"vouchers whose audit trail does not end at their status: {broken[:5]}"
    unattempted = factories.count(
        pg, """SELECT count(*) FROM vouchers v WHERE v.status = 'pending' AND NOT EXISTS (
                 SELECT 1 FROM voucher_events e WHERE e.voucher_id = v.id AND e.to_status = 'pending')""")
    assert unattempted == 0, "a pending voucher without its recorded attempt"


def _reader(gateway_url: str, api_keys: dict[str, str]) -> Callable[[], httpx.Response]:
    return lambda: httpx.get(f"{gateway_url}/api/v1/vouchers/{uuid.uuid4()}", timeout=60,
                             headers={"x-api-key": api_keys["operator"]})


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-api-key": key, **extra}


@pytest.fixture()
def spare(pg) -> set[int]:
    """Connections the killer leaves alone: the test's own (arranging and asserting)."""
    return {pg.info.backend_pid}


def test_issue_under_a_database_outage(gateway_url, api_keys, pg, pg_url, local_stack, spare) -> None:
    beneficiaries = [factories.beneficiary(pg)["id"] for _ in range(ITEMS)]
    keys = {b: f"outage-issue-{uuid.uuid4()}" for b in beneficiaries}
    outcomes = Outcomes(201)

    def send(client: httpx.Client, b: str) -> httpx.Response:
        body = {"beneficiary_id": b, "amount_cents": 140000, "currency": "NAD", "programme": "old_age",
                "cycle": "2026-03", "expires_at": "2030-01-31T23:59:59+02:00"}
        return client.post(f"{gateway_url}/api/v1/vouchers", content=json.dumps(body),
                           headers=_headers(api_keys["operator"], **{"Idempotency-Key": keys[b]}))

    with workers_not_restarted(local_stack, "DisburseFunction", _reader(gateway_url, api_keys)):
        finished = retry_until_done(beneficiaries, send, lambda r: True, outcomes, pg_url, spare)
    assert_audit_complete(pg)
    rows = pg.execute("SELECT beneficiary_id::text AS b, id::text AS id FROM vouchers").fetchall()
    assert sorted(r["b"] for r in rows) == sorted(finished)  # exactly one voucher per key, none unasked
    assert {r["b"]: r["id"] for r in rows} == {b: reply.json()["voucher_id"] for b, reply in finished.items()}
    assert factories.count(pg, "SELECT count(*) FROM voucher_events") == len(finished)


def _issued(pg, n: int, cycle: str, status: str = "issued") -> list[str]:
    return [factories.voucher(pg, factories.beneficiary(pg)["id"], cycle=cycle, status=status)["id"]
            for _ in range(n)]


def _statuses(pg) -> dict[str, str]:
    return {r["id"]: r["status"] for r in pg.execute("SELECT id::text AS id, status FROM vouchers")}


def test_webhook_under_a_database_outage(gateway_url, webhook_secrets, pg, pg_url, local_stack,
                                         fresh_idempotency, spare) -> None:
    vouchers = _issued(pg, ITEMS, "2025-12", status="pending")
    pg.execute("INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference) "
               "SELECT id, 'issued', 'pending', 'disburse', 'test' FROM vouchers")
    bodies = {v: encode(payload("voucher.activated", v, delivery_id=f"bfr_{v[:8]}")) for v in vouchers}
    webhook_ids = {v: f"msg_outage_{uuid.uuid4().hex}" for v in vouchers}
    outcomes = Outcomes(200)

    def send(client: httpx.Client, v: str) -> httpx.Response:
        headers = signed_headers(webhook_secrets, bodies[v], webhook_id=webhook_ids[v])
        return client.post(f"{gateway_url}{WEBHOOK_PATH}", content=bodies[v], headers=headers)

    def unsigned() -> httpx.Response:
        return httpx.post(f"{gateway_url}{WEBHOOK_PATH}", content=b"{}", timeout=60)

    with workers_not_restarted(local_stack, "WebhookFunction", unsigned):
        finished = retry_until_done(vouchers, send, lambda r: r.json()["status"] == "active", outcomes,
                                    pg_url, spare)
    assert_audit_complete(pg)
    assert _statuses(pg) == {v: "active" if v in finished else "pending" for v in vouchers}
    sent = sorted((v, webhook_ids[v]) for v in finished)
    applied = pg.execute("SELECT webhook_id, voucher_id::text AS v FROM webhook_events WHERE outcome = 'applied'"
                         ).fetchall()
    assert sorted((r["v"], r["webhook_id"]) for r in applied) == sent  # one applied event per delivery
    effects = pg.execute("SELECT reference, voucher_id::text AS v FROM voucher_events WHERE source = 'webhook'"
                         ).fetchall()
    assert sorted((r["v"], r["reference"]) for r in effects) == sent  # each with its effect, and no other
    others = {r["outcome"] for r in pg.execute("SELECT outcome FROM webhook_events WHERE outcome <> 'applied'")}
    assert others <= {"duplicate"}
