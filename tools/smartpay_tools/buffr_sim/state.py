"""The simulated Buffr's settings, vouchers and counters, and its error reply."""


from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_PORT = 4010
SECRET_ENV = "SMARTPAY_WEBHOOK_SECRET"
DEFAULT_API_KEY = "local-buffr-outbound-key-3e8a1f"
DISBURSE_PATH = "/api/utilities/vouchers/disburse"
STATUS_PREFIX = "/api/v1/vouchers/"
STATUSES = {"active", "redeemed", "expired", "cancelled"}
SETTLED = {"voucher.redeemed": "redeemed", "voucher.expired": "expired"}
ID_NUMBER = re.compile(r"^[0-9]{11}$")



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
    #: Seconds an Idempotency-Key is kept (0: forever). A real Buffr forgets keys after a while:
    #: a re-send after that credits again, unless the sender looks the voucher up first.
    key_retention_s: float = 0.0
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        """Apply validated changes (callers validate on a copy to change all or nothing)."""
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
            if key == "key_retention_s" and value < 0:
                raise ValueError("key_retention_s must be 0 (forever) or more")
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
    #: When each disburse call arrived (monotonic seconds): a sender's rate, measured where Buffr sees it.
    disburse_times: list[float] = field(default_factory=list)
    #: When each status call arrived (same clock): every sender's calls together against one rate.
    status_times: list[float] = field(default_factory=list)

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
            out["disburse_times"] = list(self.disburse_times)
            out["status_times"] = list(self.status_times)
        return out


def busiest_second(times: list[float]) -> int:
    """The most calls inside any one-second window of these arrival times (the figure Buffr's
    agreed rate is held against)."""
    times, busiest, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest


class Reply(Exception):
    """Raised by a route to answer immediately with a status and a JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}
