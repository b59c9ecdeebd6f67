"""Batch disbursement against the Buffr simulator, with the two limits measured in the same run.

* latency bound  = N x latency / concurrency (the best any client could do);
* client ceiling = the same N bare calls through the same client setup (BuffrClient's
  concurrent API, same concurrency) against the same simulator, no database, no other work;
* elapsed        = ``service.disburse_batch`` for N issued vouchers (claims, Buffr calls,
  bulk status writes, audit rows) — target ≤ 1.3 x the larger limit.

Also prints the alternatives the client setup was chosen against (``--compare``): a naive
``httpx.AsyncClient`` (100 connections) and one ``httpx.Client`` shared by 100 threads.
Usage: python benchmarks/disburse_batch.py [--vouchers 10000] [--latency-ms 20] [--compare 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import _common
import httpx

from smartpay_tools.buffr_sim.server import SimulatorProcess

KEY = "bench-buffr-key"


def bare_ceiling(sim_url: str, n: int, concurrency: int) -> float:
    from smartpay import buffr

    client = buffr.BuffrClient(buffr.BuffrSettings(url=sim_url, concurrency=concurrency), api_key=KEY)
    requests = [buffr.DisburseRequest(f"bare-{i}", 100, "NAD", "44050267085") for i in range(n)]
    started = time.perf_counter()
    results = client.disburse_many(requests, deadline=time.monotonic() + 600)
    elapsed = time.perf_counter() - started
    client.close()
    assert all(r.outcome == "accepted" for r in results)
    return elapsed


def naive_async(sim_url: str, n: int, concurrency: int) -> float:
    async def run() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=sim_url, limits=limits) as client:
            gate = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with gate:
                    r = await client.post("/api/utilities/vouchers/disburse", headers={
                        "authorization": f"Bearer {KEY}", "idempotency-key": f"naive-{i}"},
                        json={"voucher_id": f"naive-{i}", "amount": 100, "beneficiary_id_number": "44050267085"})
                    r.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - started

    return asyncio.run(run())


def threads_sync(sim_url: str, n: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=sim_url, limits=limits) as client:
        def one(i: int) -> None:
            client.post("/api/utilities/vouchers/disburse", headers={
                "authorization": f"Bearer {KEY}", "idempotency-key": f"thread-{i}"},
                json={"voucher_id": f"thread-{i}", "amount": 100,
                      "beneficiary_id_number": "44050267085"}).raise_for_status()

        with ThreadPoolExecutor(concurrency) as pool:
            started = time.perf_counter()
            list(pool.map(one, range(n)))
            return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vouchers", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--compare", type=int, default=2000, help="calls per alternative client (0: skip)")
    parser.add_argument("--database-name", default="smartpay_bench_disburse",
                        help="the throwaway database (dropped before and after; one per concurrent run)")
    args = parser.parse_args()
    n, conc = args.vouchers, args.concurrency
    # Before anything imports smartpay.observability (the Buffr client does): its logger reads them once.
    # INFO, as deployed (template.yaml LogLevel): the batch pays for its log lines here as it would
    # in Lambda; they are written to /dev/null instead of the terminal.
    os.environ.update({"POWERTOOLS_METRICS_NAMESPACE": "KetchupSmartPay", "POWERTOOLS_TRACE_DISABLED": "true",
                       "POWERTOOLS_LOG_LEVEL": "INFO", **_common.LOCAL_STAGE})
    from smartpay.observability import logger
    logger.registered_handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the whole run

    url = _common.fresh_database(args.database_name)
    sim = SimulatorProcess(port=0, api_key=KEY).start()
    try:
        import tempfile
        from pathlib import Path

        from smartpay_tools.data import datagen, payroll_import
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "payroll.csv"
            # one programme cycle of N vouchers, as the batch API takes it
            datagen.generate_payroll_file(path, int(n / 0.96) + 50, "2026-11", programme="old_age")
            imported_at = time.perf_counter()
            imported = payroll_import.import_file(url, path)
            import_s = time.perf_counter() - imported_at
        print(f"payroll import (this run's set-up): {imported.rows:,} rows in {import_s:.2f} s = "
              f"{imported.rows / import_s:,.0f} rows/s, {imported.vouchers_issued:,} vouchers issued "
              "(300,000 rows: benchmarks/payroll_import.py)")
        sim.configure(latency_ms=args.latency_ms)

        if args.compare:
            print(f"client setups, {args.compare} calls at concurrency {conc}, {args.latency_ms:g} ms latency:")
            for name, fn in (("httpx.AsyncClient (naive pool)", naive_async),
                             ("httpx.Client shared by threads", threads_sync),
                             ("BuffrClient (httpx + StreamTransport)", bare_ceiling)):
                elapsed = fn(sim.url, args.compare, conc)
                print(f"  {name:40} {args.compare / elapsed:8,.0f} req/s")
            sim.reset()
            sim.configure(latency_ms=args.latency_ms)

        latency_bound = n * args.latency_ms / 1000 / conc
        ceiling = bare_ceiling(sim.url, n, conc)
        sim.reset()
        sim.configure(latency_ms=args.latency_ms)

        os.environ.update({"DATABASE_URL": url, "BUFFR_API_URL": sim.url, "BUFFR_API_KEY": KEY,
                           "BUFFR_CONCURRENCY": str(conc), "DB_POOL_SIZE": "2"})
        from disburse import service
        from disburse.models import BatchRequest
        from smartpay_tools.local.lambda_runtime import FakeLambdaContext

        context = FakeLambdaContext("bench", 1024, "bench", time.time() * 1000 + 600_000)
        started, cpu = time.perf_counter(), time.thread_time()
        reply = service.disburse_batch(BatchRequest(programme="old_age", cycle="2026-11", limit=n),
                                       reference="bench", context=context)
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
        stats = sim.stats()
        print(f"\nbatch of {reply.requested} vouchers, {args.latency_ms:g} ms per call, concurrency {conc}:")
        print(f"  succeeded {reply.succeeded}, pending {reply.pending}, failed {reply.failed}; "
              f"Buffr credits {stats['credits']}, double credits {len(stats['double_credited'])}")
        print(f"  elapsed                      {elapsed:6.2f} s  ({reply.requested / elapsed:,.0f} vouchers/s)")
        print(f"  batch thread CPU             {cpu:6.2f} s  ({cpu / reply.requested * 1e6:,.0f} us per voucher: "
              "claims, answers, audit, logs; the Buffr calls run on the client's thread)")
        print(f"  latency bound (N*lat/conc)   {latency_bound:6.2f} s")
        print(f"  client ceiling (bare calls)  {ceiling:6.2f} s  ({n / ceiling:,.0f} req/s)")
        limit = max(latency_bound, ceiling)
        print(f"  elapsed / larger limit       {elapsed / limit:6.2f}  (target <= 1.30: "
              f"{'met' if elapsed <= 1.3 * limit else 'NOT met'})")
    finally:
        sim.stop()
        from smartpay import buffr, db
        buffr.reset_client()
        db.close_pool()
        _common.drop(args.database_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
