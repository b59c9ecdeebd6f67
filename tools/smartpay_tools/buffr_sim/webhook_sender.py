"""Buffr's side of the webhooks: signed Standard Webhooks deliveries, with switchable faults.

Used by the Buffr simulator (after it credits a wallet it sends ``voucher.activated``, then
``voucher.redeemed`` or ``voucher.expired``), by ``smartpay replay`` and by the tests. Faults
are knobs: a duplicate rate (the same delivery sent twice, as Buffr's retries do), a reorder
rate (a voucher's two events sent in the wrong order), a drop rate (an event never sent) and a
delay. Everything is bounded (queue size, attempts, sleeps, shutdown) and only loopback URLs are
allowed: this is a local simulator, not a client for real endpoints.

``on_event(voucher_id, type)`` is called on the worker thread when an event *happens* at Buffr
(just before it would be sent, dropped or not) so the simulator's own voucher state follows what
Buffr reports — and a dropped webhook still changes Buffr's side, which is the drift that
reconciliation exists to find. It returns False when the event no longer applies (an operator
already settled the voucher another way); the delivery is then skipped and counted ``superseded``.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from smartpay import signing

WEBHOOK_PATH = "/api/v1/webhooks/buffr"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})


def payload(type_: str, voucher_id: str, *, delivery_id: str | None, occurred_at: datetime | None = None,
            amount_cents: int | None = None, channel: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Buffr event in the Standard Webhooks shape (docs/architecture.md#webhook-signatures)."""
    at = (occurred_at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data: dict[str, Any] = {"voucher_id": str(voucher_id), "delivery_id": delivery_id, "occurred_at": at}
    if amount_cents is not None:
        data["amount_cents"] = amount_cents
    if channel is not None:
        data["channel"] = channel
    data.update(extra)
    return {"type": type_, "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"), "data": data}


def encode(body: dict[str, Any] | str | bytes) -> bytes:
    """The exact bytes that are signed and sent (compact JSON for a dict)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, separators=(",", ":")).encode()


def signed_headers(secrets: str, body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None,
                   idempotency_key: str | None = None) -> dict[str, str]:
    """Content type plus the Standard Webhooks headers, signed now with the current secret."""
    headers = {"content-type": "application/json",
               **signing.sign_headers(secrets, body, webhook_id=webhook_id, timestamp=timestamp)}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def require_loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the webhook simulator only sends to loopback addresses, not {host!r}")
    return url


@dataclass
class Knobs:
    """The simulator's webhook faults (rates are probabilities in [0, 1])."""

    settle_rate: float = 1.0  # after activation: the voucher is redeemed or expired with this probability
    redeem_rate: float = 0.8  # of those settled: redeemed with this probability, else expired
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    drop_rate: float = 0.0
    delay_ms: int = 0  # before each delivery, plus up to jitter_ms
    jitter_ms: int = 0
    max_attempts: int = 4  # per delivery, on 409/429/5xx/transport errors
    enabled: bool = True

    MAX_DELAY_MS = 10_000
    MAX_ATTEMPTS = 20
    HELP = {
        "settle_rate": "share of activated vouchers later redeemed or expired (the rest stay active)",
        "redeem_rate": "share of settled vouchers redeemed (the rest expire)",
        "duplicate_rate": "share of deliveries sent twice (same webhook-id, as Buffr's retries)",
        "reorder_rate": "share of vouchers whose outcome is sent before their activation",
        "drop_rate": "share of events never sent (Buffr's state still changes)",
        "delay_ms": "pause before each delivery",
        "jitter_ms": "extra random pause, up to this, before each delivery",
        "max_attempts": "attempts per delivery on 409/429/5xx/transport errors",
        "enabled": "send webhooks at all",
    }

    def update(self, changes: dict[str, Any]) -> Knobs:
        """Apply validated changes (e.g. from the simulator's ``/_sim/`` config endpoint); all or nothing."""
        trial = replace(self)
        for key, value in changes.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown webhook knob {key!r}; known: {', '.join(self.__dataclass_fields__)}")
            current = getattr(trial, key)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
            elif isinstance(current, float):
                if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                    raise ValueError(f"{key} must be a number in [0, 1]")
                value = float(value)
            elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= (
                    self.MAX_DELAY_MS if key.endswith("_ms") else self.MAX_ATTEMPTS):
                limit = self.MAX_DELAY_MS if key.endswith("_ms") else self.MAX_ATTEMPTS
                raise ValueError(f"{key} must be an integer in [0, {limit}]")
            setattr(trial, key, value)
        for key in self.__dataclass_fields__:
            setattr(self, key, getattr(trial, key))
        return self

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """``--webhook-<knob>`` flags for every knob (the simulator's and ``smartpay simulator``'s)."""
    for name, default in Knobs().as_dict().items():
        flag = "--webhook-" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{Knobs.HELP[name]} (default: on)")
        else:
            parser.add_argument(flag, type=type(default), default=None, metavar="N",
                                help=f"{Knobs.HELP[name]} (default: {default})")


def knobs_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Knobs:
    """Knobs from ``base`` (e.g. the env file's ``LocalStack.BuffrWebhooks``), overridden by given flags."""
    changes = dict(base or {})
    changes.update({name: getattr(args, "webhook_" + name) for name in Knobs.__dataclass_fields__
                    if getattr(args, "webhook_" + name, None) is not None})
    return Knobs().update(changes)


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    type: str
    voucher_id: str
    body: bytes
    dropped: bool = False  # happens at Buffr, never sent
    copy: bool = False  # a duplicate of the delivery before it


COUNTS = ("planned", "delivered", "duplicated", "dropped", "failed", "superseded", "discarded")


@dataclass
class SenderStats:
    """Totals, plus per event type: ``by_type["delivered"]["voucher.redeemed"]``.

    planned: events that happened (before faults); delivered: deliveries that got a final answer
    (duplicate copies included); duplicated / dropped: faults injected; failed: given up after
    max_attempts; superseded: skipped because Buffr had settled the voucher another way;
    discarded: still queued at a reset or shutdown.
    """

    planned: int = 0
    sent: int = 0  # HTTP attempts that got an answer (retries included)
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    failed: int = 0  # gave up after max_attempts
    replayed: int = 0  # answers Ketchup marked ``Idempotent-Replayed: true`` (deduplicated retries)
    statuses: Counter[int] = field(default_factory=Counter)
    by_type: dict[str, Counter[str]] = field(default_factory=lambda: {name: Counter() for name in COUNTS})

    def count(self, name: str, type_: str, n: int = 1) -> None:
        self.by_type[name][type_] += n
        if name in {"planned", "dropped", "duplicated", "failed"}:
            setattr(self, name, getattr(self, name) + n)

    def summary(self) -> dict[str, Any]:
        return {"planned": self.planned, "attempts": self.sent, "dropped": self.dropped,
                "duplicated": self.duplicated, "reordered": self.reordered, "failed": self.failed,
                "replayed": self.replayed,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "by_type": {name: dict(sorted(c.items())) for name, c in self.by_type.items()}}


class WebhookSender:
    """Sends each credited voucher's events from a bounded queue on background threads.

    Never blocks its caller (a full queue counts the events as dropped), gives up on a delivery
    after ``max_attempts``, and stops within ``close()``'s timeout, discarding what is queued.
    """

    def __init__(self, url: str | None, secrets: str, knobs: Knobs | None = None, *, workers: int = 2,
                 max_queue: int = 10_000, seed: int | None = None, timeout_s: float = 10.0,
                 on_event: Callable[[str, str], bool] | None = None) -> None:
        self.url: str | None = None
        self.set_url(url)
        self.secrets = secrets
        signing.parse_secrets(secrets)  # fail now on a malformed secret, not in a worker
        self.knobs = knobs or Knobs()
        self.stats = SenderStats()
        self.on_event = on_event
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._generation = 0
        self._closed = threading.Event()
        self._queue: queue.Queue[tuple[int, list[Delivery]]] = queue.Queue(maxsize=max_queue)
        self._client = httpx.Client(timeout=timeout_s)
        self._threads = [threading.Thread(target=self._work, name=f"webhook-sender-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def set_url(self, url: str | None) -> None:
        """Where deliveries go: a loopback base URL (the webhook path is added) or None (send nothing)."""
        if url:
            base = require_loopback(url).rstrip("/")
            self.url = base if base.endswith(WEBHOOK_PATH) else base + WEBHOOK_PATH
        else:
            self.url = None

    # --- planning -------------------------------------------------------------------------
    def plan(self, voucher_id: str, delivery_id: str, amount_cents: int) -> list[Delivery]:
        """A credited voucher's deliveries in send order, dropped ones flagged, duplicates doubled."""
        with self._lock:
            rng, knobs = self._rng, self.knobs
            events = [payload("voucher.activated", voucher_id, delivery_id=delivery_id)]
            if rng.random() < knobs.settle_rate:
                final = "voucher.redeemed" if rng.random() < knobs.redeem_rate else "voucher.expired"
                events.append(payload(final, voucher_id, delivery_id=delivery_id,
                                      **({"amount_cents": amount_cents, "channel": "wallet"}
                                         if final == "voucher.redeemed" else {})))
            deliveries = [Delivery(f"msg_{uuid.uuid4().hex}", e["type"], str(voucher_id), encode(e))
                          for e in events]
            for delivery in deliveries:
                self.stats.count("planned", delivery.type)
            if len(deliveries) > 1 and rng.random() < knobs.reorder_rate:
                deliveries.reverse()
                self.stats.reordered += 1
            planned = []
            for delivery in deliveries:
                if rng.random() < knobs.drop_rate:
                    self.stats.count("dropped", delivery.type)
                    planned.append(replace(delivery, dropped=True))
                    continue
                planned.append(delivery)
                if rng.random() < knobs.duplicate_rate:
                    planned.append(replace(delivery, copy=True))
                    self.stats.count("duplicated", delivery.type)
            return planned

    def single(self, type_: str, voucher_id: str, delivery_id: str | None, **data: Any) -> Delivery:
        """One event exactly as it happened (no faults), e.g. an operator's "redeem now"."""
        body = encode(payload(type_, voucher_id, delivery_id=delivery_id, **data))
        with self._lock:
            self.stats.count("planned", type_)
        return Delivery(f"msg_{uuid.uuid4().hex}", type_, str(voucher_id), body)

    # --- queueing (never blocks) ------------------------------------------------------------
    def voucher_credited(self, voucher_id: str, delivery_id: str, amount_cents: int) -> None:
        """Queue a credited voucher's events (the simulator's post-credit hook)."""
        if not self.knobs.enabled or self.url is None:
            return
        self.enqueue(self.plan(voucher_id, delivery_id, amount_cents))

    def enqueue(self, deliveries: list[Delivery]) -> bool:
        """Queue deliveries for the workers; False (and counted dropped) when the queue is full."""
        try:
            self._queue.put_nowait((self._generation, deliveries))
            return True
        except queue.Full:
            with self._lock:
                for delivery in deliveries:
                    if not delivery.dropped and not delivery.copy:
                        self.stats.count("dropped", delivery.type)
            return False

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every queued delivery was sent (or given up); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def reset(self) -> None:
        """Zero the stats and discard what is still queued (a new test or run starts clean)."""
        with self._lock:
            self._generation += 1
            self.stats = SenderStats()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers within ``timeout_s``: what is still queued is discarded, not sent."""
        self._closed.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.01))
        self._client.close()

    # --- sending --------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._closed.is_set():
            try:
                generation, deliveries = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                for delivery in deliveries:
                    if self._closed.is_set() or generation != self._generation:
                        with self._lock:
                            self.stats.count("discarded", delivery.type)
                        continue
                    self._deliver(delivery)
            finally:
                self._queue.task_done()

    def _deliver(self, delivery: Delivery) -> None:
        self._pause()
        if not delivery.copy and self.on_event is not None and not self.on_event(delivery.voucher_id,
                                                                                 delivery.type):
            with self._lock:
                self.stats.count("superseded", delivery.type)
            return
        if delivery.dropped:
            return
        if self.send(delivery) is not None:
            with self._lock:
                self.stats.count("delivered", delivery.type)

    def _pause(self) -> None:
        knobs = self.knobs
        if knobs.delay_ms or knobs.jitter_ms:
            with self._lock:
                jitter = self._rng.uniform(0, knobs.jitter_ms)
            self._closed.wait(min(knobs.delay_ms + jitter, Knobs.MAX_DELAY_MS) / 1000)

    def send(self, delivery: Delivery) -> int | None:
        """POST one delivery, signed afresh per attempt; retries 409/429/5xx/transport errors (bounded)."""
        url = self.url
        for attempt in range(max(self.knobs.max_attempts, 1)):
            if url is None or self._closed.is_set():
                break
            headers = signed_headers(self.secrets, delivery.body, webhook_id=delivery.webhook_id)
            try:
                response = self._client.post(url, content=delivery.body, headers=headers)
            except httpx.HTTPError:
                status = None
            else:
                status = response.status_code
                with self._lock:
                    self.stats.sent += 1
                    self.stats.statuses[status] += 1
                    if response.headers.get("idempotent-replayed", "").lower() == "true":
                        self.stats.replayed += 1
                if status not in RETRYABLE:
                    return status
            self._closed.wait(min(0.05 * 2**attempt, 0.5))
        with self._lock:
            self.stats.count("failed", delivery.type)
        return None


def resign_event(event: dict[str, Any], secrets: str) -> None:
    """Sign a saved proxy event's body afresh (its webhook-timestamp is long outside the 5-minute window)."""
    import base64

    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    headers = event.get("headers") or {}
    webhook_id = next((v for k, v in headers.items() if k.lower() == "webhook-id"), None)
    fresh = {k: v for k, v in signed_headers(secrets, raw, webhook_id=webhook_id).items() if k != "content-type"}
    for block in ("headers", "multiValueHeaders"):
        current = event.get(block) or {}
        kept = {k: v for k, v in current.items() if k.lower() not in fresh}
        kept.update({k: [v] if block == "multiValueHeaders" else v for k, v in fresh.items()})
        event[block] = kept
