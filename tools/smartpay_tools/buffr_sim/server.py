"""A Buffr simulator for the local stack, tests, the demo and benchmarks (real HTTP on loopback).

It implements the two Buffr endpoints Ketchup calls (docs/architecture.md#buffr-api) and deliberately behaves like
a partner that deduplicates **only by Idempotency-Key**: a second call for the same voucher
with another key is a second wallet credit, and is counted as one. That is what makes the
"exactly one credit" tests meaningful.

* ``POST /api/utilities/vouchers/disburse`` (Bearer key, ``Idempotency-Key`` required) →
  ``{"deliveryId", "voucher_id", "status": "active"}``. The same key with the same body replays
  the first reply (``Idempotent-Replayed: true``); the same key with another body → 422.
* ``GET /api/v1/vouchers/{voucherId}`` → ``{"voucher_id", "status", "amount", "currency",
  "deliveryId"}`` or 404.

Admin endpoints (no key; loopback only):

* ``GET|PUT /_sim/config`` — latency_ms, jitter_ms, error_rate (5xx), timeout_rate, rate_429,
  hang_ms (how long a "timeout" holds the request), retry_after_s, timeout_after_credit (a
  timeout that happens *after* the wallet was credited, the nastiest case), seed; and
  ``webhooks``: ``{"url", <Knobs>}`` (settle/redeem rates, duplicate, reorder, drop, delay,
  enabled). PUT merges, validates everything first (422 naming the bad setting, nothing changed).
* ``GET /_sim/stats`` (``?detail=1`` adds credits per voucher and each disburse call's arrival
  time, for measuring a sender's rate; ``statuses`` counts Buffr's
  vouchers by status; ``webhooks`` counts planned / delivered / duplicated / dropped / failed by
  event type), ``POST /_sim/reset`` (state, stats and the start-time settings back; the webhook
  URL is kept; queued webhooks are discarded), ``POST /_sim/webhooks/flush`` (wait for the queue).
* ``POST /_sim/vouchers`` ``{"vouchers": [{"voucher_id", "amount", "status"}, …]}`` — hold many
  vouchers at once, Buffr's state only (benchmarks, reconciliation drift set-ups).
* ``GET|PUT|DELETE /_sim/vouchers/{id}`` — read, change (status, amount, reject) or forget a
  voucher at Buffr only, so reconciliation tests can create drift. ``reject`` makes the next
  disbursement of that voucher a 422 with that reason.
* ``POST /_sim/vouchers/{id}/redeem`` | ``/expire`` ``{"webhook": true}`` and ``POST /_sim/settle``
  ``{"voucher_ids": [...], "status": "redeemed"|"expired", "webhook": false}`` — "it happened at
  Buffr now": the voucher's status changes here, and its webhook is queued unless ``webhook`` is
  false (a Buffr-only redemption that reconciliation must find). Only active vouchers settle.

Webhooks: after each credit the simulator's :class:`~smartpay_tools.buffr_sim.webhook_sender.WebhookSender`
(its own bounded queue and threads, never blocking the reply) sends ``voucher.activated`` and then
``voucher.redeemed`` or ``voucher.expired``, signed with the local secret, to the Ketchup URL
(loopback only). The outcome changes the simulator's own voucher when it happens — sent, dropped
or not — so Buffr's status endpoint agrees with what Buffr did. :attr:`BuffrSimulator.on_credit`
is a list of further callables run after each credit with the :class:`Voucher`.

Performance: raw ASGI on uvicorn with httptools + uvloop in its own process (its own GIL), so
the simulator is never the bottleneck of a benchmark (see benchmarks/disburse_batch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any

from smartpay_tools.buffr_sim.state import (
    DEFAULT_API_KEY,
    DEFAULT_PORT,
    DISBURSE_PATH,
    ID_NUMBER,
    SETTLED,
    STATUS_PREFIX,
    STATUSES,
    Reply,
    SimConfig,
    Stats,
    Voucher,
)
from smartpay_tools.buffr_sim.webhook_sender import (
    Knobs,
    WebhookSender,
    require_loopback,
)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class BuffrSimulator:
    """The simulator's state and its ASGI app (``await sim(scope, receive, send)``).

    ``webhook_secrets`` (Standard Webhooks ``whsec_`` list) turns webhooks on: they go to
    ``webhook_url`` (the Ketchup gateway; settable later through ``/_sim/config``).
    """

    def __init__(self, api_key: str = DEFAULT_API_KEY, config: SimConfig | None = None, *,
                 webhook_url: str | None = None, webhook_secrets: str | None = None,
                 knobs: Knobs | None = None, webhook_workers: int = 4) -> None:
        self.api_key = api_key
        self.config = config or SimConfig()
        self._start_config = replace(self.config)
        self.on_credit: list[Callable[[Voucher], Awaitable[None] | None]] = []
        self.webhooks: WebhookSender | None = None
        if webhook_secrets:
            self.webhooks = WebhookSender(webhook_url, webhook_secrets, replace(knobs or Knobs()),
                                          workers=webhook_workers, seed=self.config.seed,
                                          on_event=self._happened)
            self._start_knobs = replace(self.webhooks.knobs)
            self.on_credit.append(
                lambda v: self.webhooks.voucher_credited(v.voucher_id, v.delivery_id, v.amount))  # type: ignore[union-attr]
        self.reset()

    def _happened(self, voucher_id: str, type_: str) -> bool:
        """A webhook's event happens at Buffr (sender thread): settle the voucher here too.

        False when it no longer applies: the voucher was settled differently meanwhile (an
        operator's "redeem now"), so Buffr would not report this outcome.
        """
        voucher = self.vouchers.get(voucher_id)
        target = SETTLED.get(type_)
        if voucher is None or target is None:
            return True
        if voucher.status == "active":
            voucher.status = target
            return True
        return voucher.status == target

    def close(self) -> None:
        if self.webhooks is not None:
            self.webhooks.close()

    def reset(self) -> None:
        self.config = replace(self._start_config)
        if self.webhooks is not None:
            self.webhooks.knobs = replace(self._start_knobs)
            self.webhooks.reset()
        self.vouchers: dict[str, Voucher] = {}
        self.keys: dict[str, tuple[str, dict[str, Any], float]] = {}  # key -> (body fingerprint, reply, when)
        self.rejections: dict[str, str] = {}
        self.stats = Stats()
        self.rng = random.Random(self.config.seed)
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- Buffr's API ------------------------------------------------------------------------
    def _authorise(self, headers: dict[str, str]) -> None:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            self.stats.unauthorized += 1
            raise Reply(401, {"error": "unauthorized"})

    async def _faults(self) -> None:
        """Latency, then maybe an injected 429 / 5xx (before any effect)."""
        cfg = self.config
        delay = cfg.latency_ms + (self.rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        roll = self.rng.random()
        if roll < cfg.rate_429:
            self.stats.errors_injected["429"] += 1
            raise Reply(429, {"error": "rate limited"}, {"Retry-After": str(cfg.retry_after_s)})
        if roll < cfg.rate_429 + cfg.error_rate:
            self.stats.errors_injected["5xx"] += 1
            raise Reply(503, {"error": "service unavailable (simulated)"})

    async def _hang(self) -> None:
        self.stats.errors_injected["timeout"] += 1
        await asyncio.sleep(self.config.hang_ms / 1000)
        raise Reply(504, {"error": "gateway timeout (simulated)"})

    async def disburse(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.stats.calls["disburse"] += 1
        self.stats.disburse_times.append(time.monotonic())
        self._authorise(headers)
        key = headers.get("idempotency-key") or headers.get("x-idempotency-key")
        if not key:
            raise Reply(400, {"error": "Idempotency-Key header is required"})
        try:
            payload = json.loads(body)
            voucher_id = str(payload["voucher_id"])
            amount = payload["amount"]
            id_number = str(payload["beneficiary_id_number"])
        except (ValueError, KeyError, TypeError):
            raise Reply(400, {"error": "voucher_id, amount and beneficiary_id_number are required"}) from None
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise Reply(422, {"error": "amount must be a positive integer (cents)"})
        if not ID_NUMBER.match(id_number):
            raise Reply(422, {"error": "beneficiary_id_number is not a valid ID number"})
        await self._faults()
        timeout = self.rng.random() < self.config.timeout_rate
        if timeout and not self.config.timeout_after_credit:
            await self._hang()
        fingerprint = json.dumps(payload, sort_keys=True)
        known = self._remembered(key)
        if known is not None:
            if known[0] != fingerprint:
                raise Reply(422, {"error": "Idempotency-Key reused with a different request"})
            self.stats.duplicates_refused += 1
            if timeout:
                await self._hang()
            return 200, known[1], {"Idempotent-Replayed": "true"}
        if voucher_id in self.rejections:
            self.stats.rejected += 1
            raise Reply(422, {"error": self.rejections[voucher_id]})
        voucher = Voucher(voucher_id, amount, str(payload.get("currency") or "NAD"), "active",
                          f"dlv_{uuid.uuid4().hex[:20]}", time.time())
        self.vouchers[voucher_id] = voucher
        self.stats.credits[voucher_id] += 1
        reply = {"deliveryId": voucher.delivery_id, "voucher_id": voucher_id, "status": "active"}
        self.keys[key] = (fingerprint, reply, time.monotonic())
        self._credited(voucher)
        if timeout:
            await self._hang()
        return 200, reply, {}

    def _remembered(self, key: str) -> tuple[str, dict[str, Any], float] | None:
        """The key's first request and reply, unless it is older than ``key_retention_s`` (forgotten)."""
        known = self.keys.get(key)
        retention = self.config.key_retention_s
        if known is not None and retention > 0 and time.monotonic() - known[2] > retention:
            del self.keys[key]
            return None
        return known

    def _credited(self, voucher: Voucher) -> None:
        for hook in self.on_credit:
            result = hook(voucher)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def status(self, headers: dict[str, str], voucher_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.stats.calls["status"] += 1
        self.stats.status_times.append(time.monotonic())
        self._authorise(headers)
        await self._faults()
        if self.rng.random() < self.config.timeout_rate:
            await self._hang()
        voucher = self.vouchers.get(voucher_id)
        if voucher is None:
            raise Reply(404, {"error": "voucher not found", "voucher_id": voucher_id})
        return 200, self.view(voucher), {}

    @staticmethod
    def view(voucher: Voucher) -> dict[str, Any]:
        return {"voucher_id": voucher.voucher_id, "status": voucher.status, "amount": voucher.amount,
                "currency": voucher.currency, "deliveryId": voucher.delivery_id}

    # --- admin --------------------------------------------------------------------------------
    def admin(self, method: str, path: str, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
        data = json.loads(body) if body else {}
        if not isinstance(data, dict):
            raise Reply(400, {"error": "the body must be a JSON object"})
        if path == "/_sim/config":
            if method == "PUT":
                self._configure(data)
            return 200, self.settings()
        if path == "/_sim/stats" and method == "GET":
            return 200, self.summary(detail="detail=1" in query)
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return 200, {"reset": True}
        if path == "/_sim/webhooks/flush" and method == "POST":
            timeout = min(float(data.get("timeout_s", 60)), 600.0)
            done = self.webhooks.flush(timeout) if self.webhooks else True
            return (200 if done else 504), {"flushed": done}
        if path == "/_sim/settle" and method == "POST":
            return 200, self._settle_many(data)
        if path == "/_sim/vouchers" and method == "POST":
            return 200, {"loaded": self._load(data.get("vouchers") or [])}
        if path.startswith("/_sim/vouchers/"):
            rest = path.removeprefix("/_sim/vouchers/")
            voucher_id, _, action = rest.partition("/")
            if action in {"redeem", "expire"} and method == "POST":
                return self._settle_one(voucher_id, "redeemed" if action == "redeem" else "expired", data)
            if not action:
                return self._admin_voucher(method, voucher_id, data)
        raise Reply(404, {"error": "no such admin route"})

    def settings(self) -> dict[str, Any]:
        hooks = ({**self.webhooks.knobs.as_dict(), "url": self.webhooks.url, "configured": True}
                 if self.webhooks else {"configured": False})
        return {**asdict(self.config), "webhooks": hooks}

    def _configure(self, data: dict[str, Any]) -> None:
        """Validate every change on copies first, then apply them all (422 names the bad one)."""
        changes = dict(data)
        hooks = changes.pop("webhooks", None) or {}
        if not isinstance(hooks, dict):
            raise Reply(422, {"error": "webhooks must be an object"})
        url = hooks.pop("url", ...)
        if self.webhooks is None and (hooks or url is not ...):
            raise Reply(422, {"error": "webhooks are not configured: start the simulator with a signing secret"})
        try:
            config = replace(self.config)
            config.update(changes)
            knobs = replace(self.webhooks.knobs).update(hooks) if self.webhooks else None
            if url is not ... and url is not None:
                require_loopback(str(url))
        except (ValueError, TypeError) as exc:
            raise Reply(422, {"error": str(exc)}) from None
        self.config = config
        if "seed" in changes:
            self.rng = random.Random(self.config.seed)
        if self.webhooks is not None and knobs is not None:
            self.webhooks.knobs = knobs
            if url is not ...:
                self.webhooks.set_url(url)

    def summary(self, detail: bool) -> dict[str, Any]:
        out = self.stats.summary(detail)
        out["statuses"] = dict(Counter(v.status for v in self.vouchers.values()))
        out["webhooks"] = self.webhooks.stats.summary() if self.webhooks else None
        return out

    def _settle(self, voucher_id: str, status: str, webhook: bool, amount_cents: Any = None) -> str:
        """Settle one voucher at Buffr now; its webhook queued (no faults) unless ``webhook`` is false."""
        voucher = self.vouchers.get(voucher_id)
        if voucher is None:
            return "unknown"
        if voucher.status != "active":
            return "not_active"
        voucher.status = status
        if webhook and self.webhooks is not None and self.webhooks.url is not None:
            type_ = "voucher.redeemed" if status == "redeemed" else "voucher.expired"
            data = {"amount_cents": int(amount_cents or voucher.amount), "channel": "wallet"} \
                if status == "redeemed" else {}
            self.webhooks.enqueue([self.webhooks.single(type_, voucher_id, voucher.delivery_id, **data)])
            return "webhook_queued"
        return "settled"

    def _settle_one(self, voucher_id: str, status: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        outcome = self._settle(voucher_id, status, bool(data.get("webhook", True)), data.get("amount_cents"))
        if outcome == "unknown":
            raise Reply(404, {"error": "voucher not found", "voucher_id": voucher_id})
        voucher = self.vouchers[voucher_id]
        if outcome == "not_active":
            raise Reply(409, {"error": f"voucher is {voucher.status}, only active vouchers settle",
                              **self.view(voucher)})
        return 200, {**self.view(voucher), "webhook": outcome == "webhook_queued"}

    def _settle_many(self, data: dict[str, Any]) -> dict[str, Any]:
        ids, status = data.get("voucher_ids"), data.get("status", "redeemed")
        if not isinstance(ids, list) or status not in {"redeemed", "expired"}:
            raise Reply(422, {"error": "give voucher_ids (a list) and status redeemed or expired"})
        outcomes: dict[str, list[str]] = {}
        for voucher_id in ids:
            outcome = self._settle(str(voucher_id), status, bool(data.get("webhook", False)))
            outcomes.setdefault(outcome, []).append(str(voucher_id))
        settled = len(outcomes.get("settled", [])) + len(outcomes.get("webhook_queued", []))
        return {"settled": settled, "webhooks_queued": len(outcomes.get("webhook_queued", [])),
                "unknown": outcomes.get("unknown", []), "not_active": outcomes.get("not_active", [])}

    def _load(self, items: list[dict[str, Any]]) -> int:
        """Hold many vouchers at once (benchmarks, drift set-ups): ``voucher_id``, ``amount``, ``status``.

        Only Buffr's state: no wallet credit is counted and no webhook is sent."""
        for item in items:
            status = str(item.get("status", "active"))
            if status not in STATUSES:
                raise Reply(422, {"error": f"status must be one of {sorted(STATUSES)}"})
            voucher_id = str(item["voucher_id"])
            self.vouchers[voucher_id] = Voucher(voucher_id, int(item["amount"]), "NAD", status,
                                                str(item.get("delivery_id") or f"dlv_{uuid.uuid4().hex[:20]}"),
                                                time.time())
        return len(items)

    def _admin_voucher(self, method: str, voucher_id: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        voucher = self.vouchers.get(voucher_id)
        if method == "DELETE":
            self.vouchers.pop(voucher_id, None)
            self.rejections.pop(voucher_id, None)
            return 200, {"forgotten": voucher_id}
        if method == "PUT":
            if "reject" in data:
                self.rejections[voucher_id] = str(data["reject"])
            if voucher is None and ("status" in data or "amount" in data):
                voucher = self.vouchers[voucher_id] = Voucher(
                    voucher_id, int(data.get("amount", 0)), "NAD", "active", f"dlv_{uuid.uuid4().hex[:20]}",
                    time.time())
            if voucher is not None:
                if "status" in data:
                    if data["status"] not in STATUSES:
                        raise Reply(422, {"error": f"status must be one of {sorted(STATUSES)}"})
                    voucher.status = data["status"]
                if "amount" in data:
                    voucher.amount = int(data["amount"])
        if voucher is None:
            return (200 if voucher_id in self.rejections else 404), {
                "voucher_id": voucher_id, "reject": self.rejections.get(voucher_id)}
        return 200, {**self.view(voucher), "credits": self.stats.credits[voucher_id],
                     "reject": self.rejections.get(voucher_id)}

    # --- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        extra: dict[str, str] = {}
        try:
            if method == "POST" and path == DISBURSE_PATH:
                status, reply, extra = await self.disburse(headers, body)
            elif method == "GET" and path.startswith(STATUS_PREFIX) and "/" not in path[len(STATUS_PREFIX):]:
                status, reply, extra = await self.status(headers, path[len(STATUS_PREFIX):])
            elif path.startswith("/_sim/"):
                status, reply = self.admin(method, path, scope.get("query_string", b"").decode(), body)
            else:
                raise Reply(404, {"error": "not found"})
        except Reply as r:
            status, reply, extra = r.status, r.body, r.headers
        except ValueError as exc:
            status, reply = 400, {"error": str(exc)}
        raw = json.dumps(reply).encode()
        out_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        out_headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        with contextlib.suppress(OSError):
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            await send({"type": "http.response.body", "body": raw})


# --- running it ---------------------------------------------------------------------------------

def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, api_key: str = DEFAULT_API_KEY,
          config: SimConfig | None = None, *, webhook_url: str | None = None,
          webhook_secrets: str | None = None, knobs: Knobs | None = None) -> None:
    """Run the simulator in this process until interrupted (uvicorn, httptools, uvloop)."""
    import uvicorn

    sim = BuffrSimulator(api_key, config, webhook_url=webhook_url, webhook_secrets=webhook_secrets, knobs=knobs)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it with the previous handler: make
    # that a normal exit so the webhook workers are stopped below (and the exit code is 0).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    threading.Thread(target=_freeze_survivors, name="gc-freeze", daemon=True).start()
    try:
        uvicorn.run(sim, host=host, port=port, loop="uvloop", http="httptools", lifespan="off",
                    access_log=False, log_level="warning", backlog=4096, timeout_keep_alive=75)
    finally:
        sim.close()


def _freeze_survivors(every_s: float = 1.0) -> None:
    """Keep the simulator's state out of the garbage collector's full passes.

    The state grows by a voucher per credit; a full collection walks all of it and holds the event
    loop meanwhile, and every call that arrives during the pause is stamped when it ends, so the
    busiest one-second window would count a pause's backlog the senders never sent
    (docs/performance.md#pay-day has the figures). Whatever has survived is moved out of the
    collected generations every second (``gc.freeze``): a collection walks only what is new, and
    garbage is still freed by reference counting."""
    import gc

    while True:
        time.sleep(every_s)
        gc.freeze()


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(0)
