"""Buffr's side of the webhooks: signed Standard Webhooks deliveries, with switchable faults.

Used by the Buffr simulator (after it credits a wallet it sends ``voucher.activated``, then
``voucher.redeemed`` or ``voucher.expired``), by ``smartpay replay`` and by the tests. Faults
are knobs: a duplicate rate (the same delivery sent twice, as Buffr's retries do), a reorder
rate (a voucher's two events sent in the wrong order), a drop rate (an event never sent) and a
delay. Everything is bounded (queue size, attempts, sleeps) and only loopback URLs are allowed:
this is a local simulator, not a client for real endpoints.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
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
    """A Buffr event in the Standard Webhooks shape (DESIGN §6)."""
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

    redeem_rate: float = 0.8  # after activation: redeemed with this probability, else expired
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    drop_rate: float = 0.0
    delay_ms: int = 0  # before each delivery, plus up to jitter_ms
    jitter_ms: int = 0
    max_attempts: int = 4  # per delivery, on 409/429/5xx/transport errors
    enabled: bool = True

    MAX_DELAY_MS = 10_000

    def update(self, changes: dict[str, Any]) -> Knobs:
        """Apply validated changes (e.g. from the simulator's ``/_sim/`` config endpoint)."""
        for key, value in changes.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown webhook knob {key!r}")
            current = getattr(self, key)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
            elif isinstance(current, float):
                if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                    raise ValueError(f"{key} must be a number in [0, 1]")
                value = float(value)
            elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= (
                    self.MAX_DELAY_MS if key.endswith("_ms") else 20):
                raise ValueError(f"{key} is out of range")
            setattr(self, key, value)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    type: str
    voucher_id: str
    body: bytes


@dataclass
class SenderStats:
    planned: int = 0
    sent: int = 0  # HTTP attempts that got an answer
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    failed: int = 0  # gave up after max_attempts
    statuses: Counter[int] = field(default_factory=Counter)


class WebhookSender:
    """Sends each credited voucher's events from a bounded queue on background threads."""

    def __init__(self, url: str, secrets: str, knobs: Knobs | None = None, *, workers: int = 2,
                 max_queue: int = 10_000, seed: int | None = None, timeout_s: float = 10.0) -> None:
        base = require_loopback(url).rstrip("/")
        self.url = base if base.endswith(WEBHOOK_PATH) else base + WEBHOOK_PATH
        self.secrets = secrets
        signing.parse_secrets(secrets)  # fail now on a malformed secret, not in a worker
        self.knobs = knobs or Knobs()
        self.stats = SenderStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[Delivery] | None] = queue.Queue(maxsize=max_queue)
        self._client = httpx.Client(timeout=timeout_s)
        self._threads = [threading.Thread(target=self._work, name=f"webhook-sender-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # --- planning -------------------------------------------------------------------------
    def plan(self, voucher_id: str, delivery_id: str, amount_cents: int) -> list[Delivery]:
        """The deliveries for one credited voucher, in send order, after drops/duplicates/reordering."""
        with self._lock:
            rng, knobs = self._rng, self.knobs
            final = "voucher.redeemed" if rng.random() < knobs.redeem_rate else "voucher.expired"
            events = [payload("voucher.activated", voucher_id, delivery_id=delivery_id)]
            events.append(payload(final, voucher_id, delivery_id=delivery_id,
                                  **({"amount_cents": amount_cents, "channel": "wallet"}
                                     if final == "voucher.redeemed" else {})))
            deliveries = [Delivery(f"msg_{uuid.uuid4().hex}", e["type"], str(voucher_id), encode(e))
                          for e in events]
            self.stats.planned += len(deliveries)
            if rng.random() < knobs.reorder_rate:
                deliveries.reverse()
                self.stats.reordered += 1
            kept = []
            for delivery in deliveries:
                if rng.random() < knobs.drop_rate:
                    self.stats.dropped += 1
                    continue
                kept.append(delivery)
                if rng.random() < knobs.duplicate_rate:
                    kept.append(delivery)
                    self.stats.duplicated += 1
            return kept

    # --- the simulator's post-credit hook -------------------------------------------------
    def voucher_credited(self, voucher_id: str, delivery_id: str, amount_cents: int) -> None:
        """Queue a voucher's events (never blocks the caller; a full queue drops and counts them)."""
        if not self.knobs.enabled:
            return
        deliveries = self.plan(voucher_id, delivery_id, amount_cents)
        try:
            self._queue.put_nowait(deliveries)
        except queue.Full:
            with self._lock:
                self.stats.dropped += len(deliveries)

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every queued delivery was sent (or given up); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._client.close()

    # --- sending --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            deliveries = self._queue.get()
            try:
                if deliveries is None:
                    return
                for delivery in deliveries:
                    self._pause()
                    self.send(delivery)
            finally:
                self._queue.task_done()

    def _pause(self) -> None:
        knobs = self.knobs
        if knobs.delay_ms or knobs.jitter_ms:
            with self._lock:
                jitter = self._rng.uniform(0, knobs.jitter_ms)
            time.sleep(min(knobs.delay_ms + jitter, Knobs.MAX_DELAY_MS) / 1000)

    def send(self, delivery: Delivery) -> int | None:
        """POST one delivery, signed afresh per attempt; retries 409/429/5xx/transport errors (bounded)."""
        for attempt in range(max(self.knobs.max_attempts, 1)):
            headers = signed_headers(self.secrets, delivery.body, webhook_id=delivery.webhook_id)
            try:
                response = self._client.post(self.url, content=delivery.body, headers=headers)
            except httpx.HTTPError:
                status = None
            else:
                status = response.status_code
                with self._lock:
                    self.stats.sent += 1
                    self.stats.statuses[status] += 1
                if status not in RETRYABLE:
                    return status
            time.sleep(min(0.05 * 2**attempt, 0.5))
        with self._lock:
            self.stats.failed += 1
        return None
