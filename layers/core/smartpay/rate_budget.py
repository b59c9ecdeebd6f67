"""One rate budget for every call to Buffr (docs/architecture.md#one-rate-budget).

Buffr agreed to ``BUFFR_MAX_RATE_PER_S`` requests per second from SmartPay as a whole, retries
included. Every attempt of every sender — cycle-run consumers, single sends, reconciliation's
status reads — takes a slot from one shared schedule before it starts:

* The schedule is a GCRA token bucket without burst: one DynamoDB item (``RATE_BUDGET_TABLE``,
  key ``buffr``) holds ``tat``, the wall-clock time of the budget's next free slot. A sender
  reserves ``n`` slots with one conditional ``UpdateItem`` (``tat += n * interval``), so slots are
  handed out evenly spaced at ``interval = (1 + late) / (rate * headroom)`` across every
  container, and a container pays one round trip per ``n`` calls (a lease of
  ``RATE_BUDGET_LEASE_S`` of the rate), not one per call.
* Unused time is not banked (a reservation starts at ``max(tat, now)``): there is no burst. A call
  starts on its slot or up to ``late`` (``RATE_BUDGET_LATE_S``) after it — a slot later than that
  (a stalled loop) is dropped, not used late — so a one-second window holds the starts of slots
  from ``1 + late`` seconds of the schedule: the spacing pays for that lateness, and any
  one-second window holds at most ``ceil(rate * headroom)`` starts, never more than the rate.
* Priority by horizon: payments may reserve while ``tat`` is at most ``RATE_BUDGET_HORIZON_S``
  ahead of now; lookups (status reads) only while it is at most ``lease`` ahead — they take
  what payments leave, and never hold slots far ahead of a cycle run.
* A 429 from Buffr slows the whole budget, not one container: until now + ``Retry-After`` every
  sender's reservations are spaced for ``RATE_BUDGET_SLOW_FACTOR`` (0.5) of the rate (the item's
  ``slow_until``), and the call Buffr refused waits ``Retry-After`` before its retry.

Without ``RATE_BUDGET_TABLE`` (tests, the CLI) the same schedule lives in the process; with
``BUFFR_MAX_RATE_PER_S`` 0 or unset there is no budget at all (calls start at once).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from smartpay.observability import logger
from smartpay.settings import env_float, env_str

PAYMENTS = "payments"
LOOKUPS = "lookups"
KEY = "buffr"


@dataclass(frozen=True)
class Grant:
    """A reservation's answer: ``n`` slots ``spacing`` apart from ``start`` (wall clock), or none
    and ``retry_in`` seconds."""

    start: float | None
    n: int = 0
    spacing: float = 0.0
    retry_in: float = 0.0


class Store(Protocol):
    def reserve(self, n: int, interval: float, now: float, horizon: float, slow_factor: float) -> Grant: ...

    def slow(self, until: float) -> None: ...


class MemoryStore:
    """The schedule in this process (one process shares it among its threads)."""

    def __init__(self) -> None:
        self.tat = self.slow_until = 0.0
        self._lock = threading.Lock()

    def reserve(self, n: int, interval: float, now: float, horizon: float, slow_factor: float) -> Grant:
        with self._lock:
            if self.tat > now + horizon:
                return Grant(None, retry_in=self.tat - now - horizon)
            spacing = interval / slow_factor if now < self.slow_until else interval
            start = max(self.tat, now)
            self.tat = start + n * spacing
            return Grant(start, n, spacing)

    def slow(self, until: float) -> None:
        with self._lock:
            self.slow_until = max(self.slow_until, until)


class DynamoStore:
    """The schedule on one DynamoDB item: every container of every function shares it.

    Two conditional writes cover the two states: a busy budget (``tat`` ahead of now, within the
    horizon) is advanced in place; an idle one (``tat`` in the past, or no item yet) restarts at
    now. Which one is tried first follows the last ``tat`` seen, so a reservation is usually one
    round trip; a lost race is retried with the state the refusal returned. ``slow_until`` comes
    back with every answer, so a 429 seen anywhere slows this container's next reservation.
    """

    def __init__(self, table: str, key: str = KEY, client: Any = None) -> None:
        self.table, self.key = table, {"id": {"S": key}}
        self._client = client
        self._last_tat = self._slow_until = 0.0

    @property
    def client(self) -> Any:
        if self._client is None:
            from smartpay.idempotency_store import dynamodb_client

            self._client = dynamodb_client()
        return self._client

    def connect(self) -> None:
        """Build the client (loading DynamoDB's service model takes a while on a cold container)."""
        _ = self.client

    def _update(self, expression: str, condition: str, values: dict[str, float]) -> float | None:
        """The new ``tat``; None when the condition did not hold (``_last_tat`` then says why)."""
        client = self.client
        try:
            reply = client.update_item(
                TableName=self.table, Key=self.key, UpdateExpression=expression, ConditionExpression=condition,
                ExpressionAttributeValues={k: {"N": repr(v)} for k, v in values.items()},
                ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except client.exceptions.ConditionalCheckFailedException as exc:
            self._seen(exc.response.get("Item", {}))
            return None
        return self._seen(reply["Attributes"])

    def _seen(self, item: dict[str, Any]) -> float:
        self._last_tat = float(item.get("tat", {}).get("N", 0.0))
        self._slow_until = float(item.get("slow_until", {}).get("N", 0.0))
        return self._last_tat

    def reserve(self, n: int, interval: float, now: float, horizon: float, slow_factor: float) -> Grant:
        for _ in range(8):
            spacing = interval / slow_factor if now < self._slow_until else interval
            span = n * spacing  # races with other containers: each lost one tells us the current tat
            if self._last_tat > now + horizon:
                return Grant(None, retry_in=self._last_tat - now - horizon)
            if self._last_tat >= now:
                tat = self._update("SET tat = tat + :span", "tat >= :now AND tat <= :limit",
                                   {":span": span, ":now": now, ":limit": now + horizon})
                if tat is not None:
                    return Grant(tat - span, n, spacing)
            else:
                tat = self._update("SET tat = :end", "attribute_not_exists(tat) OR tat < :now",
                                   {":end": now + span, ":now": now})
                if tat is not None:
                    return Grant(now, n, spacing)
        return Grant(None, retry_in=interval)

    def slow(self, until: float) -> None:
        self._update("SET slow_until = :until", "attribute_not_exists(slow_until) OR slow_until < :until",
                     {":until": until})


class RateBudget:
    """This container's side of the budget: reserves slots in leases, starts each call on its slot.

    ``take`` is awaited on the Buffr client's loop before every attempt; the store's round trip
    runs on a worker thread so the loop keeps sending meanwhile. Waiters of a kind queue FIFO for
    the slots that kind reserved.
    """

    def __init__(self, store: Store, rate: float, *, headroom: float = 1.0, lease_s: float = 0.1,
                 horizon_s: float = 2.0, late_s: float = 0.025, slow_factor: float = 0.5) -> None:
        self.store, self.rate = store, rate
        self.interval = (1.0 + late_s) / (rate * headroom) if rate > 0 else 0.0  # a late start stays in the rate
        self.lease = max(1, round(rate * headroom * lease_s))
        self.horizons = {PAYMENTS: horizon_s, LOOKUPS: lease_s}
        self.late_s, self.slow_factor = late_s, min(max(slow_factor, 0.05), 1.0)
        self.dropped = 0  # slots passed unused (their start would have been late)
        self.round_trip = 0.01  # the store's, smoothed: slots are asked for from when the answer lands
        self._slots: dict[str, deque[float]] = {PAYMENTS: deque(), LOOKUPS: deque()}
        self._waiting = {PAYMENTS: 0, LOOKUPS: 0}
        self._refill: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io = ThreadPoolExecutor(1, "rate-budget")
        if self.interval and hasattr(store, "connect"):
            self._io.submit(store.connect)  # the store's client is built meanwhile, not on the first call

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    async def take(self, kind: str = PAYMENTS, deadline: float | None = None) -> bool:
        """Wait for this call's slot; False when none comes before ``deadline`` (monotonic)."""
        if not self.interval:
            return True
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._refill = loop, {k: asyncio.Lock() for k in self._slots}
        slots = self._slots[kind]
        while True:
            if not slots:
                if deadline is not None and time.monotonic() >= deadline:
                    return False  # no slot came in time (a busy budget, or its store down)
                self._waiting[kind] += 1  # the demand a reservation is sized by
                try:
                    await self._reserve(kind, deadline)
                finally:
                    self._waiting[kind] -= 1
                continue
            slot = slots.popleft()
            if deadline is not None and slot - (time.time() - time.monotonic()) > deadline:
                slots.appendleft(slot)  # still good for a later call with more time
                return False
            delay = slot - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.time() - slot <= self.late_s:
                return True
            self.dropped += 1

    async def _reserve(self, kind: str, deadline: float | None) -> None:
        slots = self._slots[kind]
        async with self._refill[kind]:
            if slots:
                return
            await asyncio.sleep(0)  # callers started in the same tick count towards this lease
            n = min(self.lease, max(1, self._waiting[kind]))
            asked = time.time()
            try:
                grant = await asyncio.get_running_loop().run_in_executor(
                    self._io, self.store.reserve, n, self.interval, asked + self.round_trip, self.horizons[kind],
                    self.slow_factor)
            except Exception as exc:  # the store is down: wait one lease, never send unmetered
                logger.warning("rate budget unavailable", extra={"error": type(exc).__name__})
                grant = Grant(None, retry_in=self.lease * self.interval)
            self.round_trip = min(0.8 * self.round_trip + 0.2 * (time.time() - asked), 0.5)
            if grant.start is not None:
                drop_before = time.time() - self.late_s  # a slow round trip: slots already past are gone
                fresh = [grant.start + i * grant.spacing for i in range(grant.n)]
                slots.extend(s for s in fresh if s >= drop_before)
                self.dropped += sum(1 for s in fresh if s < drop_before)
                return
            wait = grant.retry_in
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0) + 0.01)
            await asyncio.sleep(max(wait, 0.001))

    async def slow_down(self, seconds: float) -> None:
        """Buffr said 429 (``Retry-After`` ``seconds``): every sender runs slower until then."""
        if not self.interval:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, self.store.slow, time.time() + seconds)
        except Exception as exc:
            logger.warning("rate budget unavailable", extra={"error": type(exc).__name__})

    def close(self) -> None:
        self._io.shutdown(wait=False)


def from_env() -> RateBudget:
    """The budget the environment describes (see the module docstring for the settings)."""
    rate = env_float("BUFFR_MAX_RATE_PER_S", 0.0)
    table = env_str("RATE_BUDGET_TABLE", "")
    store: Store = DynamoStore(table) if table and rate > 0 else MemoryStore()
    return RateBudget(store, rate, headroom=env_float("RATE_BUDGET_HEADROOM", 1.0),
                      lease_s=env_float("RATE_BUDGET_LEASE_S", 0.1), horizon_s=env_float("RATE_BUDGET_HORIZON_S", 2.0),
                      late_s=env_float("RATE_BUDGET_LATE_S", 0.025),
                      slow_factor=env_float("RATE_BUDGET_SLOW_FACTOR", 0.5))
