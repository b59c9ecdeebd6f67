"""Warm webhook receipt in-process: N fresh events, then the same N again as Buffr's retries.

Runs the real handler (signature, parsing, Powertools idempotency, state machine, PostgreSQL)
against moto's in-process DynamoDB (``mock_aws``) and the machine's PostgreSQL (a throwaway
database, connected as the function's own role). Only the handler call is timed; building and
signing each delivery (Buffr's work) is not.

Counts, per event: DynamoDB calls (botocore ``before-call`` hook on the idempotency client) and
PostgreSQL transactions (``pg_stat_database`` commits + rollbacks of the throwaway database,
flushed by closing the pool). Baseline ratio: fresh p50 against one bare round trip of the same
work's SQL (lock, update with its audit row, the log insert) on a plain connection.

Targets: fresh p50 <= 10 ms, p99 <= 30 ms; <= 2 DynamoDB calls and 1 PostgreSQL transaction per
fresh event; <= 1 DynamoDB call per duplicate.

    python benchmarks/webhook_receipt.py [--count 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for sub in ("layers/core", "functions/webhook", "tools"):
    sys.path.insert(0, str(ROOT / sub))

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLE = "smartpay-idempotency-bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seed(url: str, count: int) -> list[str]:
    import psycopg

    from smartpay_tools.data import bulk_seed

    with psycopg.connect(url, autocommit=True, options="-c smartpay.source=operator") as conn:  # audited as
        ids = bulk_seed.issued_vouchers(conn, count, cycle="2026-11", reference="bench")  # born issued
        bulk_seed.running_run(conn, ids, cycle="2026-11")  # only a run's vouchers are sent
        conn.execute("UPDATE vouchers SET status = 'pending'")  # then sent
    return ids


def transactions(dbname: str) -> int:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for _ in range(50):  # the pool's backends report their counts as they exit
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT xact_commit + xact_rollback, numbackends FROM pg_stat_database "
                               "WHERE datname = %s", (dbname,)).fetchone()
            if row[1] == 0:
                return int(row[0])
            time.sleep(0.1)
    raise RuntimeError("the benchmark database still has connections")


def baseline_ms(url: str, vouchers: list[str], samples: int = 500) -> float:
    """One transaction with the same statements the webhook runs, on a plain warm connection (the
    audit row is the vouchers trigger's, as for the webhook)."""
    import psycopg

    times = []
    with psycopg.connect(url, options="-c smartpay.source=webhook") as conn:
        for voucher_id in vouchers[:samples]:
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute("SELECT status FROM vouchers WHERE id = %s FOR UPDATE", (voucher_id,))
                conn.execute("UPDATE vouchers SET version = version + 1, buffr_delivery_id = %s WHERE id = %s",
                             (f"b_{voucher_id[:8]}", voucher_id))
                conn.execute("INSERT INTO webhook_events (webhook_id, payload, outcome) VALUES (%s, '{}', "
                             "'ignored')", (f"baseline-{voucher_id}",))
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


BREAKDOWN_EVENTS = 500


def breakdown(vouchers: list[str], deliver: Any) -> dict[str, float]:
    """Per fresh event: moto's backend, botocore's client side, the PostgreSQL transaction, the rest.

    Run after the timed phases on other vouchers, because the wrappers themselves cost a little.
    """
    from moto.core import botocore_stubber

    from smartpay import db, idempotency

    spent: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    @contextlib.contextmanager
    def timed_transaction(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            with original_transaction(*args, **kwargs) as conn:
                yield conn
        finally:
            spent["pg"] = spent.get("pg", 0.0) + time.perf_counter() - t0

    client = idempotency.persistence_layer("webhook").client
    original_call, original_stub = client._make_api_call, botocore_stubber.BotocoreStubber.__call__
    original_transaction = db.transaction
    client._make_api_call = timed("dynamodb", original_call)
    botocore_stubber.BotocoreStubber.__call__ = timed("moto", original_stub)
    db.transaction = timed_transaction
    rows: list[dict[str, float]] = []
    try:
        for voucher_id in vouchers[:BREAKDOWN_EVENTS]:
            spent.clear()
            total, _status = deliver(voucher_id)
            ms = {k: v * 1000 for k, v in spent.items()}
            rows.append({"total": total, "moto backend": ms.get("moto", 0.0),
                         "botocore client": ms.get("dynamodb", 0.0) - ms.get("moto", 0.0),
                         "PostgreSQL transaction (with the Python inside it)": ms.get("pg", 0.0),
                         "rest (our code, Powertools)": total - ms.get("dynamodb", 0.0) - ms.get("pg", 0.0)})
    finally:
        del client._make_api_call
        botocore_stubber.BotocoreStubber.__call__ = original_stub
        db.transaction = original_transaction
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()

    import boto3
    from moto import mock_aws

    from smartpay import db, idempotency, migrate
    from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, payload, signed_headers
    from smartpay_tools.local import envfile
    from smartpay_tools.local.events import api_event
    from smartpay_tools.local.lambda_runtime import FakeLambdaContext
    from smartpay_tools.local.services import drop_database, ensure_database, url_as

    secrets = envfile.load()["WebhookFunction"]["WEBHOOK_SECRET"]
    dbname = f"smartpay_bench_webhook_{os.getpid()}"
    owner_url = ensure_database(ADMIN_URL, dbname)
    try:
        migrate.apply(owner_url)
        warmup = 200
        vouchers = seed(owner_url, args.count + warmup + 500 + BREAKDOWN_EVENTS)
        os.environ.update({
            "DATABASE_URL": url_as(owner_url, "smartpay_webhook"), "WEBHOOK_SECRET": secrets,
            "IDEMPOTENCY_TABLE": TABLE, "POWERTOOLS_SERVICE_NAME": "webhook", "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "KetchupSmartPay", "LOG_LEVEL": "WARNING",
            "POWERTOOLS_LOG_LEVEL": "WARNING", "AWS_DEFAULT_REGION": "af-south-1", "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x", "STAGE": "local", "DATABASE_SSLMODE": "disable",
        })
        with mock_aws():
            boto3.client("dynamodb").create_table(
                TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
            from webhook import handler

            dynamo_calls: list[str] = []
            idempotency.persistence_layer("webhook").client.meta.events.register(
                "before-call.dynamodb", lambda model, **_: dynamo_calls.append(model.name))
            bodies = {v: encode(payload("voucher.activated", v, delivery_id=f"bfr_{v[:8]}")) for v in vouchers}
            ids = {v: f"msg_{uuid.uuid4().hex}" for v in vouchers}

            def deliver(voucher_id: str) -> tuple[float, int]:
                raw = bodies[voucher_id]
                event = api_event("POST", WEBHOOK_PATH, body=raw,
                                  headers=signed_headers(secrets, raw, webhook_id=ids[voucher_id]))
                context = FakeLambdaContext("smartpay-webhook-bench", 512, str(uuid.uuid4()),
                                            time.time() * 1000 + 15000)
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # EMF metrics lines
                    result = handler.lambda_handler(event, context)
                return (time.perf_counter() - t0) * 1000, result["statusCode"]

            def phase(batch: list[str]) -> tuple[list[float], int, int, int]:
                """Times, PG transactions, DynamoDB calls, and PG connections opened (each opening
                counts one transaction in pg_stat_database: reported, not charged to events)."""
                db.close_pool()
                before_tx, before_dynamo = transactions(dbname), len(dynamo_calls)
                times, bad = [], 0
                for voucher_id in batch:
                    ms, status = deliver(voucher_id)
                    times.append(ms)
                    bad += status != 200
                connects = db.get_pool().get_stats().get("connections_num", 0)
                db.close_pool()
                if bad:
                    raise RuntimeError(f"{bad} deliveries were not answered 200")
                return times, transactions(dbname) - before_tx - connects, len(dynamo_calls) - before_dynamo, \
                    connects

            for voucher_id in vouchers[:warmup]:  # warm the container, the pool, the caches
                deliver(voucher_id)
            fresh_batch = vouchers[warmup:warmup + args.count]
            fresh, fresh_tx, fresh_dynamo, fresh_connects = phase(fresh_batch)
            dupes, dupe_tx, dupe_dynamo, dupe_connects = phase(fresh_batch)
            applied = 0
            import psycopg

            with psycopg.connect(owner_url) as conn:
                applied = conn.execute("SELECT count(*) FROM voucher_events WHERE source = 'webhook'").fetchone()[0]
                base = baseline_ms(owner_url, vouchers[warmup + args.count:])
            parts = breakdown(vouchers[warmup + args.count:], deliver)
        n = args.count
        report = {
            "events": n,
            "fresh_p50_ms": round(statistics.median(fresh), 2), "fresh_p99_ms": round(pct(fresh, 0.99), 2),
            "fresh_mean_ms": round(statistics.fmean(fresh), 2),
            "duplicate_p50_ms": round(statistics.median(dupes), 2),
            "duplicate_p99_ms": round(pct(dupes, 0.99), 2),
            "dynamodb_calls_per_fresh": round(fresh_dynamo / n, 3),
            "dynamodb_calls_per_duplicate": round(dupe_dynamo / n, 3),
            "pg_transactions_per_fresh": round(fresh_tx / n, 3),
            "pg_transactions_per_duplicate": round(dupe_tx / n, 3),
            "pg_connections_opened": {"fresh": fresh_connects, "duplicate": dupe_connects},
            "baseline_sql_transaction_p50_ms": round(base, 2),
            "fresh_p50_over_baseline": round(statistics.median(fresh) / base, 2),
            "audit_rows": applied,
            "breakdown_p50_ms": parts,
        }
        checks = {
            "fresh p50 <= 10 ms": report["fresh_p50_ms"] <= 10,
            "fresh p99 <= 30 ms": report["fresh_p99_ms"] <= 30,
            "<= 2 DynamoDB calls per fresh event": report["dynamodb_calls_per_fresh"] <= 2,
            "1 PostgreSQL transaction per fresh event": report["pg_transactions_per_fresh"] <= 1,
            "<= 1 DynamoDB call per duplicate": report["dynamodb_calls_per_duplicate"] <= 1,
            f"exactly {n + warmup} audit rows (one per voucher)": applied == n + warmup,
        }
        print(f"webhook receipt, in-process warm, moto (mock_aws) + PostgreSQL, {n} events each")
        print(f"  fresh:      p50 {report['fresh_p50_ms']:6.2f} ms   p99 {report['fresh_p99_ms']:6.2f} ms   "
              f"DynamoDB calls/event {report['dynamodb_calls_per_fresh']}   "
              f"PG transactions/event {report['pg_transactions_per_fresh']}")
        print(f"  duplicates: p50 {report['duplicate_p50_ms']:6.2f} ms   p99 {report['duplicate_p99_ms']:6.2f} ms   "
              f"DynamoDB calls/event {report['dynamodb_calls_per_duplicate']}   "
              f"PG transactions/event {report['pg_transactions_per_duplicate']}")
        print(f"  PostgreSQL connections opened: {fresh_connects} (fresh phase), {dupe_connects} (duplicates); "
              "each opening also counts one transaction in pg_stat_database, not charged above")
        print(f"  baseline (same SQL, bare connection) p50 {base:.2f} ms; fresh p50 / baseline = "
              f"{report['fresh_p50_over_baseline']}")
        print(f"  where a fresh event's time goes (p50 of {BREAKDOWN_EVENTS} more, instrumented): "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items()))
        for name, ok in checks.items():
            print(f"  [{'met' if ok else 'NOT met'}] {name}")
        print(json.dumps(report))
    finally:
        db.close_pool()
        drop_database(ADMIN_URL, dbname)


if __name__ == "__main__":
    main()
