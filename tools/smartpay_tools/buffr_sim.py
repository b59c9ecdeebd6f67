"""A Buffr simulator for the local stack, tests, the demo and benchmarks (real HTTP on loopback).

It implements the two Buffr endpoints Ketchup calls (DESIGN §4) and deliberately behaves like
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
  timeout that happens *after* the wallet was credited, the nastiest case), seed. PUT merges.
* ``GET /_sim/stats`` (``?detail=1`` adds credits per voucher), ``POST /_sim/reset``.
* ``GET|PUT|DELETE /_sim/vouchers/{id}`` — read, change (status, amount, reject) or forget a
  voucher at Buffr only, so reconciliation tests can create drift. ``reject`` makes the next
  disbursement of that voucher a 422 with that reason.

Hook point for webhooks: :attr:`BuffrSimulator.on_credit` is a list of callables run (as
tasks, never blocking the reply) after each wallet credit with the :class:`Voucher`.

Performance: raw ASGI on uvicorn with httptools + uvloop in its own process (its own GIL), so
the simulator is never the bottleneck of a benchmark (see benchmarks/disburse_batch.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_PORT = 4010
DEFAULT_API_KEY = "local-buffr-outbound-key-3e8a1f"
DISBURSE_PATH = "/api/utilities/vouchers/disburse"
STATUS_PREFIX = "/api/v1/vouchers/"
STATUSES = {"active", "redeemed", "expired", "cancelled"}
_ID_NUMBER = re.compile(r"^[0-9]{11}$")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class SimConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    rate_429: float = 0.0
    hang_ms: float = 10_000.0
    retry_after_s: int = 1
    timeout_after_credit: bool = True
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(known)}")
            current = getattr(self, key)
            if isinstance(current, bool) or key == "timeout_after_credit":
                value = bool(value)
            elif key == "seed":
                value = None if value is None else int(value)
            elif isinstance(current, int):
                value = int(value)
            else:
                value = float(value)
            if (key.endswith("rate") or key == "rate_429") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be between 0 and 1")
            setattr(self, key, value)


@dataclass
class Voucher:
    voucher_id: str
    amount: int
    currency: str
    status: str
    delivery_id: str
    credited_at: float


@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)
    credits: Counter[str] = field(default_factory=Counter)
    duplicates_refused: int = 0
    errors_injected: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    unauthorized: int = 0

    def summary(self, detail: bool) -> dict[str, Any]:
        doubled = {v: n for v, n in self.credits.items() if n > 1}
        out: dict[str, Any] = {
            "calls": dict(self.calls),
            "credits": sum(self.credits.values()),
            "vouchers_credited": len(self.credits),
            "double_credited": doubled,
            "duplicates_refused": self.duplicates_refused,
            "errors_injected": dict(self.errors_injected),
            "rejected": self.rejected,
            "unauthorized": self.unauthorized,
        }
        if detail:
            out["credits_per_voucher"] = dict(self.credits)
        return out


class Reply(Exception):
    """Raised by a route to answer immediately with a status and a JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class BuffrSimulator:
    """The simulator's state and its ASGI app (``await sim(scope, receive, send)``)."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, config: SimConfig | None = None) -> None:
        self.api_key = api_key
        self.config = config or SimConfig()
        self.on_credit: list[Callable[[Voucher], Awaitable[None] | None]] = []
        self.reset()

    def reset(self) -> None:
        self.vouchers: dict[str, Voucher] = {}
        self.keys: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (body fingerprint, reply)
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
        if not _ID_NUMBER.match(id_number):
            raise Reply(422, {"error": "beneficiary_id_number is not a valid ID number"})
        await self._faults()
        timeout = self.rng.random() < self.config.timeout_rate
        if timeout and not self.config.timeout_after_credit:
            await self._hang()
        fingerprint = json.dumps(payload, sort_keys=True)
        known = self.keys.get(key)
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
        self.keys[key] = (fingerprint, reply)
        self._credited(voucher)
        if timeout:
            await self._hang()
        return 200, reply, {}

    def _credited(self, voucher: Voucher) -> None:
        for hook in self.on_credit:
            result = hook(voucher)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def status(self, headers: dict[str, str], voucher_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.stats.calls["status"] += 1
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
        if path == "/_sim/config":
            if method == "PUT":
                self.config.update(data)
                if "seed" in data:
                    self.rng = random.Random(self.config.seed)
            return 200, asdict(self.config)
        if path == "/_sim/stats" and method == "GET":
            return 200, self.stats.summary(detail="detail=1" in query)
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return 200, {"reset": True}
        if path.startswith("/_sim/vouchers/"):
            return self._admin_voucher(method, path.removeprefix("/_sim/vouchers/"), data)
        raise Reply(404, {"error": "no such admin route"})

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
          config: SimConfig | None = None) -> None:
    """Run the simulator in this process until interrupted (uvicorn, httptools, uvloop)."""
    import uvicorn

    uvicorn.run(BuffrSimulator(api_key, config), host=host, port=port, loop="uvloop", http="httptools",
                lifespan="off", access_log=False, log_level="warning", backlog=4096,
                timeout_keep_alive=75)


class SimulatorProcess:
    """The simulator in its own process (its own GIL), plus a small admin client for it."""

    def __init__(self, port: int = DEFAULT_PORT, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> SimulatorProcess:
        from smartpay_tools.services import free_port, wait_port

        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smartpay_tools.buffr_sim", "--host", self.host, "--port", str(self.port),
             "--api-key", self.api_key], stdout=subprocess.DEVNULL)
        wait_port(self.host, self.port, timeout, "Buffr simulator")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        reply = httpx.request(method, f"{self.url}/_sim/{path}", json=body, timeout=10)
        reply.raise_for_status()
        return dict(reply.json())

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self._admin("PUT", "config", settings)

    def stats(self, detail: bool = False) -> dict[str, Any]:
        return self._admin("GET", "stats?detail=1" if detail else "stats")

    def reset(self, **settings: Any) -> None:
        self._admin("POST", "reset")
        defaults = asdict(SimConfig())
        self.configure(**{**defaults, **settings})

    def set_voucher(self, voucher_id: str, **changes: Any) -> dict[str, Any]:
        return self._admin("PUT", f"vouchers/{voucher_id}", changes)

    def voucher(self, voucher_id: str) -> dict[str, Any] | None:
        import httpx

        reply = httpx.get(f"{self.url}/_sim/vouchers/{voucher_id}", timeout=10)
        return None if reply.status_code == 404 else dict(reply.json())

    def forget(self, voucher_id: str) -> None:
        self._admin("DELETE", f"vouchers/{voucher_id}")

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="buffr-sim", description="Buffr simulator (loopback only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument("--rate-429", type=float, default=0.0)
    args = parser.parse_args(argv)
    config = SimConfig(latency_ms=args.latency_ms, error_rate=args.error_rate, timeout_rate=args.timeout_rate,
                       rate_429=args.rate_429)
    serve(args.host, args.port, args.api_key, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
