"""Shared set-up for the benchmarks: a fresh database on the machine's PostgreSQL, paths."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("layers/core", "tools", "functions/disburse"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Benchmarks run as the local stage: the only one that may reach PostgreSQL without TLS and the
#: simulator over plain http (deployed stages always use verify-full and https).
LOCAL_STAGE = {"STAGE": "local", "DATABASE_SSLMODE": "disable"}


def fresh_database(name: str) -> str:
    """Drop and recreate ``name``, migrate it, return its URL."""
    from smartpay import migrate
    from smartpay_tools.local.services import drop_database, ensure_database

    drop_database(ADMIN_URL, name)
    url = ensure_database(ADMIN_URL, name)
    migrate.apply(url)
    return url


def drop(name: str) -> None:
    from smartpay_tools.local.services import drop_database

    drop_database(ADMIN_URL, name)


def progress_printer(started: float, every_s: float = 15.0) -> Callable[[dict], None]:
    """An ``on_progress`` for ``CycleApi.watch``: a line every ``every_s`` with the run's counts."""
    last = [0.0]

    def report(run: dict) -> None:
        if run.get("progress") and time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            p = run["progress"]
            print(f"  {time.monotonic() - started:6.0f}s  active {p['active']:,}  queued {p['queued']:,}  "
                  f"{p['rate_per_s']:.0f}/s", flush=True)

    return report
