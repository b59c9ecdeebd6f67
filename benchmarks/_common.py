"""Shared set-up for the benchmarks: a fresh database on the machine's PostgreSQL, paths."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def sender_stamps() -> Iterator[Path]:
    """A folder every local function worker started inside stamps its Buffr requests into
    (:mod:`smartpay_tools.local.send_trace`): the senders' own clock beside the simulator's."""
    from smartpay_tools.local import send_trace

    with tempfile.TemporaryDirectory(prefix="smartpay-sends-") as folder:
        os.environ[send_trace.ENV] = folder
        try:
            yield Path(folder)
        finally:
            os.environ.pop(send_trace.ENV, None)


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


def active_vouchers(url: str, n: int, cycle: str, *, first: int = 0, amount: int = 140000) -> list[str]:
    """``n`` active vouchers of ``cycle`` (one beneficiary each, ID numbers ``first``, ``first+1``, …)
    by COPY: born issued (the database refuses anything else), then active with a delivery id, so
    each has its two audit rows, written by the database."""
    import uuid

    import psycopg

    ids = [str(uuid.uuid4()) for _ in range(n)]
    people = [str(uuid.uuid4()) for _ in range(n)]
    with psycopg.connect(url, autocommit=True, options="-c smartpay.source=operator") as conn, conn.cursor() as cur:
        with cur.copy("COPY beneficiaries (id, id_number, first_name, last_name, msisdn, region, programme) "
                      "FROM STDIN") as copy:
            for i, b in enumerate(people):
                copy.write_row((b, f"{first + i:011d}", "Bench", "Person", f"+26481{i % 10**7:07d}",
                                "Khomas", "old_age"))
        with cur.copy("COPY vouchers (id, beneficiary_id, programme, cycle, amount_cents, "
                      "issued_at, expires_at, status_changed_at) FROM STDIN") as copy:
            for v, b in zip(ids, people, strict=True):
                copy.write_row((v, b, "old_age", cycle, amount, "2026-11-01T00:00:00Z",
                                "2027-12-31T00:00:00Z", "2026-11-01T01:00:00Z"))
        cur.execute("""UPDATE vouchers SET status = 'active', buffr_delivery_id = 'dlv_' || left(id::text, 8),
                              status_changed_at = '2026-11-01T01:00:00Z' WHERE id = ANY(%s::uuid[])""", (ids,))
        cur.execute("ANALYZE")
    return ids
