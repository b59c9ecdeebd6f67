"""Buffr's one rate budget on DynamoDB (moto's server, as the local stack runs it): every sender draws
from it, so together they never exceed it, and a 429 seen by one holds them all."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from smartpay import buffr, rate_budget
from smartpay_tools.buffr_sim.state import busiest_second
from smartpay_tools.local.services import FAKE_AWS, MotoServer

RATE = 50.0  # per second: small, so the test draws a few seconds of it
TABLE = "smartpay-rate-budget-test"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = MotoServer().start()
    try:
        yield server.endpoint
    finally:
        server.stop()


def _dynamodb(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="af-south-1",
                        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture()
def table(moto_endpoint: str) -> Iterator[str]:
    client = _dynamodb(moto_endpoint)
    client.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    try:
        yield TABLE
    finally:
        client.delete_table(TableName=TABLE)


def _budget(endpoint: str) -> rate_budget.RateBudget:
    """One container's side of the budget: its own store client, the shared table."""
    return rate_budget.RateBudget(rate_budget.DynamoStore(TABLE, client=_dynamodb(endpoint)), RATE)


def _draw(endpoint: str, n: int, kind: str, out: Any) -> None:
    """A sender process: ``n`` calls, 20 waiting at a time; puts the start time of each."""
    budget = _budget(endpoint)

    async def main() -> list[float]:
        gate = asyncio.Semaphore(20)
        starts: list[float] = []

        async def one() -> None:
            async with gate:
                assert await budget.take(kind)
                starts.append(time.time())

        await asyncio.gather(*(one() for _ in range(n)))
        return starts

    out.put(asyncio.run(main()))


def test_two_processes_drawing_from_one_budget_never_exceed_it_in_any_second(moto_endpoint: str, table: str) -> None:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    senders = [ctx.Process(target=_draw, args=(moto_endpoint, 120, kind, out))
               for kind in (rate_budget.PAYMENTS, rate_budget.PAYMENTS)]
    for p in senders:
        p.start()
    starts = [out.get(timeout=60) for _ in senders]
    for p in senders:
        p.join(timeout=10)
    assert [len(s) for s in starts] == [120, 120]
    # the two really sent side by side: each started calls while the other was still sending
    assert min(starts[0]) < max(starts[1]) and min(starts[1]) < max(starts[0])
    assert busiest_second(starts[0] + starts[1]) <= RATE


def test_a_429_seen_by_one_sender_slows_every_sender(moto_endpoint: str, table: str) -> None:
    """Two containers' stores on one item: after the first says 429, the second's reservations are
    spaced for half the rate until Retry-After has passed, then for the whole rate again."""
    seen_429 = rate_budget.DynamoStore(TABLE, client=_dynamodb(moto_endpoint))
    other = rate_budget.DynamoStore(TABLE, client=_dynamodb(moto_endpoint))
    interval, now = 1 / RATE, time.time()
    assert other.reserve(5, interval, now, 2.0, 0.5).spacing == interval
    seen_429.slow(now + 3.0)
    other.reserve(1, interval, now, 2.0, 0.5)  # the reply tells this container about the 429
    slowed = other.reserve(5, interval, now + 0.01, 2.0, 0.5)
    assert slowed.spacing == 2 * interval and slowed.n == 5
    assert other.reserve(5, interval, now + 3.5, 4.0, 0.5).spacing == interval  # Retry-After has passed


def test_buffr_client_slows_the_shared_budget_on_a_429_with_retry_after() -> None:
    """Two containers' clients on one schedule: Buffr's 429 to the first slows the second's calls."""
    store = rate_budget.MemoryStore()

    def handler(status: int) -> Any:
        def reply(request: httpx.Request) -> httpx.Response:
            if status == 429:
                return httpx.Response(429, headers={"Retry-After": "2"})
            return httpx.Response(200, json={"deliveryId": "dlv_1"})
        return reply

    settings = buffr.BuffrSettings(url="https://buffr.test", max_attempts=1)
    first = buffr.BuffrClient(settings, transport=httpx.MockTransport(handler(429)), api_key="k",
                              budget=rate_budget.RateBudget(store, 100.0))
    second = buffr.BuffrClient(settings, transport=httpx.MockTransport(handler(200)), api_key="k",
                               budget=rate_budget.RateBudget(store, 100.0))
    request = buffr.DisburseRequest("5d0c1a2b-0000-4000-8000-000000000001", 100, "NAD", "44050267085")
    try:
        before = time.time()
        assert first.disburse(request, deadline=time.monotonic() + 10).error == "rate_limited"
        assert store.slow_until >= before + 2.0
        interval = second.budget.interval
        assert store.reserve(1, interval, time.time(), 2.0, 0.5).spacing == 2 * interval
        assert second.disburse(request, deadline=time.monotonic() + 10).outcome == "accepted"
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("kind", ["memory", "dynamodb"])
def test_payments_go_first_and_status_reads_take_what_is_left(kind: str, request: pytest.FixtureRequest) -> None:
    """Payments may book the schedule up to the horizon ahead; a status read gets a slot only when
    the schedule is about to go idle, so a reconciliation never delays a cycle run's calls."""
    if kind == "memory":
        store: Any = rate_budget.MemoryStore()
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        request.getfixturevalue("table")
        store = rate_budget.DynamoStore(TABLE, client=_dynamodb(endpoint))
    budget = rate_budget.RateBudget(store, RATE)
    payments, lookups = budget.horizons[rate_budget.PAYMENTS], budget.horizons[rate_budget.LOOKUPS]
    now, interval = time.time(), budget.interval
    booked = store.reserve(50, interval, now, payments, 0.5)  # one second of payments ahead
    assert booked.start == pytest.approx(now, abs=1e-6) and booked.n == 50
    refused = store.reserve(5, interval, now, lookups, 0.5)
    assert refused.start is None and refused.retry_in == pytest.approx(50 * interval - lookups, abs=1e-3)
    assert store.reserve(5, interval, now, payments, 0.5).start == pytest.approx(now + 50 * interval, abs=1e-6)
    later = now + 55 * interval - lookups / 2  # the payments' bookings run out: the status read goes next
    assert store.reserve(5, interval, later, lookups, 0.5).start == pytest.approx(now + 55 * interval, abs=1e-6)


def test_with_its_store_down_the_budget_sends_nothing_unmetered_and_gives_up_at_the_deadline() -> None:
    class Down:
        def reserve(self, *args: Any) -> rate_budget.Grant:
            raise ConnectionError("DynamoDB unreachable")

        def slow(self, until: float) -> None:
            raise ConnectionError("DynamoDB unreachable")

    budget = rate_budget.RateBudget(Down(), RATE)

    async def main() -> bool:
        return await budget.take(rate_budget.PAYMENTS, deadline=time.monotonic() + 0.3)

    assert asyncio.run(main()) is False
