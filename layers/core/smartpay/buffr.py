"""The Buffr client (docs/architecture.md#buffr-api): one per container, bounded retries, keyed by voucher id.

API
---
* :func:`client` — the container's one :class:`BuffrClient` (created on first use).
* ``client().disburse(request, deadline=…)`` → :class:`BuffrResult` — one voucher, blocking.
* ``client().disburse_many(requests, deadline=…, concurrency=…)`` and
  ``client().status_many(voucher_ids, deadline=…, concurrency=…)`` → results in input order, at
  most ``concurrency`` calls in flight (default ``BUFFR_CONCURRENCY``, 100). ``on_result`` is
  called (from the client's I/O thread) as each finishes, so a caller can persist as it goes.
  A status result is ``found`` with ``body`` = ``{"status", "amount", "deliveryId", …}`` or
  ``not_found``.
* ``client().submit_disburse_many(requests, deadline=…, on_result=…)`` starts many with a single
  wake-up of the client's loop (not one per request) and hands each answer to ``on_result``: the
  building block the batch pipeline uses to keep N calls in flight.
* :func:`deadline_from` turns a Lambda context into the monotonic deadline every call takes.

Rate: every attempt first takes a slot of Buffr's one rate budget (:mod:`smartpay.rate_budget`,
shared by every container of every function): disbursements as payments, status reads after
them; a 429 slows the budget for every sender.

Retry policy: timeouts, connection errors, 408, 429 and 5xx are retried with exponential
backoff and full jitter (``uniform(0, min(cap, base·2^n))``), at least ``Retry-After`` when Buffr
sends one, at most ``BUFFR_MAX_ATTEMPTS`` attempts and never past the deadline (each attempt's
connect and read timeouts are also cut to the time left). The read timeout adapts to Buffr's
observed latency as TCP's retransmission timer does (RFC 6298: smoothed latency + 4 times its mean
deviation, at least ``BUFFR_READ_TIMEOUT_MIN_S``, at most ``BUFFR_READ_TIMEOUT_S``): a call Buffr
holds far longer than its others is given up and retried under the same key (Buffr answers a
repeated key with its first answer, so a retry cannot credit twice) instead of holding the run's
last voucher for the full timeout; when Buffr slows down as a whole, the timeout grows with it.
Other 4xx are never retried:
400/410/422 are Buffr *rejecting the voucher* (``rejected``); anything else (401/403 — our key,
404 — our URL, 409 …) says nothing about the voucher, so the outcome is ``unavailable`` and the
voucher stays ``pending`` rather than being failed by a configuration mistake. A reply over
1 MB is refused unread (``bad_reply``), never retried.

The ``Idempotency-Key`` is ``disburse-<voucher_id>`` and nothing else (the integration guide
hashes a fresh timestamp into its key, so its retries are *not* deduplicated; ours always are).

Why it is built this way: the client is CPU-bound at reconciliation's concurrency, so each
call is prebuilt request bytes sent over :mod:`smartpay.buffr_transport` (HTTP/1.1 keep-alive
over asyncio streams) on one background uvloop per container; warm invocations reuse the
connections and synchronous handlers call it directly. httpx's request/response objects and
h11, aiohttp and httpx-aiohttp were measured against the same simulator and a bare client in
the same runs (docs/performance.md#buffr-client-setups).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from smartpay import rate_budget
from smartpay.buffr_transport import (
    HttpxTransport,
    Origin,
    Reply,
    ReplyTooLarge,
    StreamTransport,
    TransportError,
    TransportTimeout,
)
from smartpay.observability import logger
from smartpay.settings import env_float, env_int, https_url, secret

RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
REJECTION_STATUSES = frozenset({400, 410, 422})
DISBURSE_PATH = "/api/utilities/vouchers/disburse"
STATUS_PATH = "/api/v1/vouchers/{voucher_id}"


def idempotency_key(voucher_id: Any) -> str:
    """Derived from the voucher id only, so every retry, by anyone, is the same request to Buffr."""
    return f"disburse-{voucher_id}"


@dataclass(frozen=True)
class BuffrSettings:
    url: str
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_attempts: int = 4
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    concurrency: int = 100
    read_timeout_min: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_timeout_min", min(self.read_timeout_min, self.read_timeout))

    @classmethod
    def from_env(cls) -> BuffrSettings:
        return cls(
            url=https_url("BUFFR_API_URL"),
            connect_timeout=env_float("BUFFR_CONNECT_TIMEOUT_S", 2.0),
            read_timeout=env_float("BUFFR_READ_TIMEOUT_S", 5.0),
            max_attempts=env_int("BUFFR_MAX_ATTEMPTS", 4, minimum=1, maximum=10),
            backoff_base=env_int("BUFFR_BACKOFF_BASE_MS", 200, minimum=1) / 1000,
            backoff_cap=env_int("BUFFR_BACKOFF_CAP_MS", 5000, minimum=1) / 1000,
            concurrency=env_int("BUFFR_CONCURRENCY", 100, minimum=1, maximum=1000),
            read_timeout_min=env_float("BUFFR_READ_TIMEOUT_MIN_S", 0.5),
        )


class ReadTimeout:
    """The read timeout of the next attempt, from the latency of Buffr's answers so far (RFC 6298's
    estimator): ``srtt + 4 * rttvar`` within ``[minimum, maximum]``; ``maximum`` until
    ``WARM_SAMPLES`` answers were timed. Only answers that settle a call feed it (not a timeout,
    nor a 5xx/429 that may come from a gateway's own timer), and each attempt's timeout is fixed
    when it starts."""

    WARM_SAMPLES = 20

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.samples = 0
        self.srtt = self.rttvar = 0.0

    def observe(self, seconds: float) -> None:
        if self.samples == 0:
            self.srtt, self.rttvar = seconds, seconds / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - seconds)
            self.srtt = 0.875 * self.srtt + 0.125 * seconds
        self.samples += 1

    @property
    def current(self) -> float:
        if self.samples < self.WARM_SAMPLES:
            return self.maximum
        return min(self.maximum, max(self.minimum, self.srtt + 4 * self.rttvar))


@dataclass(frozen=True)
class DisburseRequest:
    voucher_id: str
    amount_cents: int
    currency: str
    beneficiary_id_number: str

    def payload(self) -> dict[str, Any]:
        # Buffr's field names (integration guide); ``amount`` is in minor units (cents).
        return {"voucher_id": self.voucher_id, "amount": self.amount_cents, "currency": self.currency,
                "beneficiary_id_number": self.beneficiary_id_number}


@dataclass
class BuffrResult:
    """What one logical call (all its attempts) came to.

    ``outcome``: ``accepted`` (disburse 2xx with a delivery id), ``rejected`` (Buffr refused the
    voucher: 400/410/422), ``found`` / ``not_found`` (status), or ``unavailable`` (no answer we
    can act on: ``error`` says why — ``timeout``, ``connect``, ``rate_limited``, ``server_error``,
    ``refused``, ``bad_reply``, ``deadline``).
    """

    outcome: str
    voucher_id: str
    status_code: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None
    reason: str | None = None
    retry_after: float | None = None

    @property
    def delivery_id(self) -> str | None:
        value = self.body.get("deliveryId") or self.body.get("delivery_id")
        return str(value) if value else None


def deadline_from(context: Any, margin_s: float = 1.0, *, default_s: float = 25.0) -> float:
    """A ``time.monotonic()`` deadline ``margin_s`` before the Lambda's own (for the caller's DB work)."""
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else default_s
    return time.monotonic() + max(remaining - margin_s, 0.0)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        import email.utils  # an HTTP date instead of seconds: rare, so not imported at cold start

        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(parsed.timestamp() - time.time(), 0.0) if parsed else None


def _reason(response: Reply) -> str:
    try:
        data = response.json()
        if isinstance(data, dict):
            return str(data.get("error") or data.get("detail") or data.get("message") or data)[:500]
    except ValueError:
        pass
    return (response.text or f"HTTP {response.status}")[:500]


# --- request bytes ---------------------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9._~-]+").fullmatch
_STATUS_SUFFIX = b" HTTP/1.1\r\n"
_FIXED_HEADERS = b"user-agent: ketchup-smartpay/1\r\naccept: application/json\r\n"


def _header_value(value: str) -> bytes:
    """A header value as bytes; one that could split the header block is refused."""
    if _SAFE(value) is None and any(c in value for c in "\r\n\0"):
        raise ValueError(f"unsafe header value {value!r}")
    return value.encode("ascii")


def _path_segment(value: str) -> bytes:
    return (value if _SAFE(value) else quote(value, safe="")).encode("ascii")


# --- the client ----------------------------------------------------------------------------------

def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the layer ships it): the client is CPU-bound at high concurrency and
    uvloop's loop carries more requests per second on the same core (docs/performance.md);
    plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the layer and the dev venv both have it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Pacer:
    """Start calls no faster than ``rate`` per second, evenly spaced (a configurable rate limit).

    Used on one loop at a time (not thread-safe): ``status_many`` paces logical calls (a
    reconciliation's own cap, under the shared rate budget); ``submit_disburse_many`` takes one
    to pace every attempt, retries included.

    Waiters take their turn one at a time (a lock, FIFO) and the next slot is set when a call
    starts, not reserved in advance: when the loop stalls (a busy core, the GIL), the waiters
    that were due do not all start together when it resumes: the next slot is one interval after
    a start that came more than an interval late. A start a little late (timer overshoot) keeps
    the schedule, so the rate does not drift down; any window of T seconds holds at most
    T * rate + 2 starts.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn: asyncio.Lock | None = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        if self._turn is None or self._loop is not loop:
            self._loop, self._turn = loop, asyncio.Lock()
        async with self._turn:
            delay = self.next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            late = now - self.next_at
            self.next_at = (self.next_at if late < self.interval else now) + self.interval


class BuffrClient:
    """Buffr's API with the retry policy above; synchronous methods over one background loop.

    ``transport``: a :class:`~smartpay.buffr_transport.StreamTransport` by default; an httpx
    transport (e.g. ``httpx.MockTransport`` in tests) is run through
    :class:`~smartpay.buffr_transport.HttpxTransport`.
    """

    def __init__(self, settings: BuffrSettings | None = None, *, transport: Any = None,
                 api_key: str | None = None, sleep: Callable[[float], Any] | None = None,
                 budget: rate_budget.RateBudget | None = None) -> None:
        self.settings = settings or BuffrSettings.from_env()
        self.budget = budget or rate_budget.from_env()  # every attempt below takes a slot of it
        self._api_key = api_key
        if transport is None:
            transport = StreamTransport(self.settings.url, max_connections=self.settings.concurrency)
        elif hasattr(transport, "handle_async_request"):
            transport = HttpxTransport(self.settings.url, transport)
        self._transport = transport
        self._sleep = sleep or asyncio.sleep
        origin = Origin(self.settings.url)
        self._host_line = origin.host_line
        self._disburse_line = b"POST " + origin.path + DISBURSE_PATH.encode() + b" HTTP/1.1\r\n"
        self._status_prefix = b"GET " + origin.path + STATUS_PATH.split("{", 1)[0].encode()
        self._headers_for: tuple[str, bytes] = ("", b"")  # (api key, the headers every request carries)
        self._loop = _event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="buffr-client", daemon=True)
        self._thread.start()
        self.retries = 0  # attempts beyond the first, for metrics
        self.read_timeout = ReadTimeout(self.settings.read_timeout_min, self.settings.read_timeout)
        self._gate: asyncio.Semaphore | None = None  # submit_disburse_many's bound, on the loop

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _common_headers(self) -> bytes:
        # The key is resolved per call through Powertools' cache, so a rotated key is picked up;
        # the header bytes are rebuilt only when it changes.
        key = self._api_key or secret("BUFFR_API_KEY")
        if key != self._headers_for[0]:
            self._headers_for = (key, self._host_line + _FIXED_HEADERS + b"authorization: Bearer "
                                 + _header_value(key) + b"\r\n")
        return self._headers_for[1]

    # --- one logical call, all attempts ---
    async def _call(self, voucher_id: str, deadline: float, line: bytes, tail: bytes, *,
                    pacer: Pacer | None = None, kind: str = rate_budget.PAYMENTS) -> tuple[BuffrResult, Reply | None]:
        """Send ``line`` + the common headers + ``tail`` (further headers, blank line, body).

        Every attempt first takes its slot of the shared rate budget (``kind``: payments before
        lookups); a retry waits its backoff on its own, then queues for a slot like any call, so
        a failing call never holds up the others.
        """
        s = self.settings
        attempt = 0
        error, retry_after, last = "deadline", None, None
        data = line + self._common_headers() + tail
        budget = self.budget
        while attempt < s.max_attempts:
            if pacer is not None:
                await pacer.wait()
            if not await budget.take(kind, deadline - 0.05):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            attempt += 1
            sent_at = time.monotonic()
            try:
                last = await self._transport.request(data, connect_timeout=min(s.connect_timeout, remaining),
                                                     read_timeout=min(self.read_timeout.current, remaining))
            except TransportTimeout:
                error, retry_after, last = "timeout", None, None
            except ReplyTooLarge as exc:
                return BuffrResult("unavailable", voucher_id, exc.status, attempts=attempt, error="bad_reply",
                                   reason=str(exc)), None
            except TransportError:
                error, retry_after, last = "connect", None, None
            else:
                if last.status not in RETRYABLE_STATUSES:
                    self.read_timeout.observe(time.monotonic() - sent_at)
                    return BuffrResult("", voucher_id, last.status, attempts=attempt), last
                error = "rate_limited" if last.status == 429 else "server_error"
                retry_after = _retry_after(last.headers.get("retry-after"))
                if last.status == 429:  # Buffr's view of the agreed rate: every sender holds off
                    await budget.slow_down(retry_after if retry_after is not None else 1.0)
            if attempt >= s.max_attempts:
                break
            backoff = random.uniform(0, min(s.backoff_cap, s.backoff_base * 2 ** (attempt - 1)))
            wait = max(backoff, retry_after or 0.0)
            if time.monotonic() + wait >= deadline - 0.05:
                break
            self.retries += 1
            await self._sleep(wait)
        result = BuffrResult("unavailable", voucher_id, last.status if last is not None else None,
                             attempts=attempt, error=error, retry_after=retry_after)
        if last is not None:
            result.reason = _reason(last)
        return result, None

    async def disburse_async(self, request: DisburseRequest, deadline: float,
                             pacer: Pacer | None = None) -> BuffrResult:
        body = json.dumps(request.payload(), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        tail = (b"content-type: application/json\r\nidempotency-key: "
                + _header_value(idempotency_key(request.voucher_id))
                + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        result, response = await self._call(request.voucher_id, deadline, self._disburse_line, tail,
                                             pacer=pacer)
        if response is None:
            return result
        if response.is_success:
            try:
                result.body = dict(response.json())
            except (ValueError, TypeError):
                result.body = {}
            if result.delivery_id:
                result.outcome = "accepted"
            else:
                result.outcome, result.error, result.reason = "unavailable", "bad_reply", "no deliveryId in reply"
        elif response.status in REJECTION_STATUSES:
            result.outcome, result.reason = "rejected", _reason(response)
        else:
            result.outcome, result.error, result.reason = "unavailable", "refused", (
                f"HTTP {response.status}: {_reason(response)}")
        return result

    async def status_async(self, voucher_id: str, deadline: float) -> BuffrResult:
        line = self._status_prefix + _path_segment(voucher_id) + _STATUS_SUFFIX
        result, response = await self._call(voucher_id, deadline, line, b"\r\n", kind=rate_budget.LOOKUPS)
        if response is None:
            return result
        if response.is_success:
            result.outcome = "found"
            try:
                result.body = dict(response.json())
            except (ValueError, TypeError):
                result.outcome, result.error = "unavailable", "bad_reply"
        elif response.status == 404:
            result.outcome = "not_found"
        else:
            result.outcome, result.error, result.reason = "unavailable", "refused", (
                f"HTTP {response.status}: {_reason(response)}")
        return result

    # --- synchronous API ---
    def disburse(self, request: DisburseRequest, *, deadline: float) -> BuffrResult:
        return self._run(self.disburse_async(request, deadline))

    def submit_disburse_many(self, requests: Sequence[DisburseRequest], *, deadline: float,
                             on_result: Callable[[BuffrResult], Any], pacer: Pacer | None = None) -> None:
        """Start many disbursements with one wake-up of the client's loop; ``on_result`` gets each answer.

        At most ``concurrency`` of everything submitted here run at once; the rest wait their
        turn *before* their call starts (so its deadline checks and timeouts hold), which lets a
        caller submit ahead of free slots and keep them busy while it does other work.
        ``on_result`` is called from the client's I/O thread, once per request; a bug in the
        client becomes an ``unavailable`` result (``error="client_error"``), so no voucher is lost.
        ``pacer``: every attempt (retries too) starts no faster than its rate.
        """
        async def gated(request: DisburseRequest) -> None:
            if self._gate is None:
                self._gate = asyncio.Semaphore(self.settings.concurrency)
            try:
                async with self._gate:  # the call's deadline and timeouts count from here
                    result = await self.disburse_async(request, deadline, pacer)
            except Exception as exc:
                logger.exception("Buffr call raised", extra={"voucher_id": request.voucher_id})
                result = BuffrResult("unavailable", request.voucher_id, error="client_error",
                                     reason=type(exc).__name__)
            on_result(result)

        def start() -> None:
            for request in requests:
                self._loop.create_task(gated(request))

        self._loop.call_soon_threadsafe(start)

    def _many(self, make: Callable[[Any], Any], items: Sequence[Any], concurrency: int | None,
              on_result: Callable[[BuffrResult], None] | None, rate_per_s: float | None = None,
              pacer: Pacer | None = None) -> list[BuffrResult]:
        limit = concurrency or self.settings.concurrency

        async def run_all() -> list[BuffrResult]:
            gate = asyncio.Semaphore(limit)
            pace = pacer or (Pacer(rate_per_s) if rate_per_s else None)

            async def one(item: Any) -> BuffrResult:
                async with gate:
                    if pace is not None:
                        await pace.wait()
                    result: BuffrResult = await make(item)
                if on_result is not None:
                    on_result(result)
                return result

            return list(await asyncio.gather(*(one(item) for item in items)))

        return self._run(run_all())

    def disburse_many(self, requests: Iterable[DisburseRequest], *, deadline: float, concurrency: int | None = None,
                      on_result: Callable[[BuffrResult], None] | None = None) -> list[BuffrResult]:
        return self._many(lambda r: self.disburse_async(r, deadline), list(requests), concurrency, on_result)

    def status_many(self, voucher_ids: Iterable[str], *, deadline: float, concurrency: int | None = None,
                    on_result: Callable[[BuffrResult], None] | None = None,
                    rate_per_s: float | None = None, pacer: Pacer | None = None) -> list[BuffrResult]:
        """Buffr's view of many vouchers: at most ``concurrency`` in flight and, with ``rate_per_s``
        (or a caller's ``pacer``, shared with its sends), logical calls started no faster than that
        (evenly spaced; retries inside a call included)."""
        return self._many(lambda v: self.status_async(str(v), deadline), list(voucher_ids), concurrency, on_result,
                          rate_per_s, pacer)

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._transport.aclose(), timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self.budget.close()


_lock = threading.Lock()
_client: BuffrClient | None = None


def client() -> BuffrClient:
    """The container's Buffr client (connections are reused across warm invocations)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = BuffrClient()
    return _client


def reset_client() -> None:
    """Close and forget the container's client (tests; after BUFFR_API_URL changes)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
            _client = None
