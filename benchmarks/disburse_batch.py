"""Batch disbursement against the Buffr simulator, with its limits measured in the same run.

* latency bound  = N x latency / concurrency (the best any client could do);
* wire ceiling   = N disburse calls through a bare client (``_wire.py``: asyncio streams + a
  minimal HTTP/1.1 writer/parser, same event loop and concurrency), probed twice before the
  batch and once after (median);
* client ceiling = the same N calls through ``BuffrClient`` (no database), probed alike;
* elapsed        = ``batch.disburse_batch`` for N issued vouchers (claims, Buffr calls,
  bulk status writes, audit rows); ``ratio_to_wire`` = elapsed / max(latency bound, wire
  ceiling), target ≤ 1.3.

The client alternatives (httpx, httpx-aiohttp, aiohttp) are compared in ``buffr_clients.py``.
Ends with one JSON line of its figures.
Usage: python benchmarks/disburse_batch.py [--vouchers 10000] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import _common
import _wire

from smartpay_tools.buffr_sim.process import SimulatorProcess

KEY = "bench-buffr-key"
DB_NAME = f"smartpay_bench_disburse_{os.getpid()}"  # own name: others may run it on the same server


def client_seconds(sim_url: str, n: int, concurrency: int, tag: str) -> float:
    from smartpay import buffr

    client = buffr.BuffrClient(buffr.BuffrSettings(url=sim_url, concurrency=concurrency), api_key=KEY)
    requests = [buffr.DisburseRequest(f"client-{tag}-{i}", 100, "NAD", "44050267085") for i in range(n)]
    client.disburse_many(requests[:concurrency], deadline=time.monotonic() + 60)  # connections up (warm)
    started = time.perf_counter()
    results = client.disburse_many(requests, deadline=time.monotonic() + 600)
    elapsed = time.perf_counter() - started
    client.close()
    assert all(r.outcome == "accepted" for r in results)
    return elapsed


def wire_seconds(sim: SimulatorProcess, n: int, concurrency: int, tag: str) -> float:
    payload = lambda v: {"voucher_id": v, "amount": 100, "currency": "NAD",  # noqa: E731
                         "beneficiary_id_number": "44050267085"}
    requests = _wire.disburse_requests(sim.host, sim.port, KEY, [f"wire-{tag}-{i}" for i in range(n)], payload)
    return _wire.wire(sim.host, sim.port, requests, concurrency)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vouchers", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--compare", type=int, default=0, help="moved: benchmarks/buffr_clients.py compares clients")
    parser.add_argument("--database-name", default=DB_NAME,
                        help="the throwaway database (dropped before and after; one per concurrent run)")
    args = parser.parse_args()
    if args.compare:
        print("client setups are compared by benchmarks/buffr_clients.py (beside the wire ceiling)")
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

        latency_bound = n * args.latency_ms / 1000 / conc
        wires, clients = [], []
        for r in range(2):
            wires.append(wire_seconds(sim, n, conc, f"a{r}"))
            clients.append(client_seconds(sim.url, n, conc, f"a{r}"))
        sim.reset()
        sim.configure(latency_ms=args.latency_ms)

        os.environ.update({"DATABASE_URL": url, "BUFFR_API_URL": sim.url, "BUFFR_API_KEY": KEY,
                           "BUFFR_CONCURRENCY": str(conc), "DB_POOL_SIZE": "2"})
        from collections import Counter

        import psycopg

        from disburse import repository
        from disburse.logic import batch
        from smartpay import db
        from smartpay_tools.data import bulk_seed
        from smartpay_tools.local.lambda_runtime import FakeLambdaContext

        with psycopg.connect(url) as conn:  # the cycle's run under way: only its vouchers are claimed
            ids = [r[0] for r in conn.execute("SELECT id::text FROM vouchers WHERE cycle = '2026-11' "
                                              "AND status = 'issued' ORDER BY id LIMIT %s", (n,))]
            bulk_seed.running_run(conn, ids, cycle="2026-11")
        context = FakeLambdaContext("bench", 1024, "bench", time.time() * 1000 + 600_000)
        started, cpu = time.perf_counter(), time.thread_time()
        with db.autocommit() as conn:  # the send pipeline a run's chunk uses, on the whole cycle at once
            details = {row[0]: row[1:] for row in repository.sendable(conn, ids)}
            sent = batch.send(conn, ids, details, deadline=batch.call_deadline(context), reference="bench",
                              in_flight=conc)
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
        outcomes = Counter(item.outcome for item in sent.items)
        reply = argparse.Namespace(requested=len(ids), succeeded=outcomes["active"], pending=outcomes["pending"],
                                   failed=outcomes["failed"])
        stats = sim.stats()
        print(f"\nbatch of {reply.requested} vouchers, {args.latency_ms:g} ms per call, concurrency {conc}:")
        print(f"  succeeded {reply.succeeded}, pending {reply.pending}, failed {reply.failed}; "
              f"Buffr credits {stats['credits']}, double credits {len(stats['double_credited'])}")
        print(f"  elapsed                      {elapsed:6.2f} s  ({reply.requested / elapsed:,.0f} vouchers/s)")
        print(f"  batch thread CPU             {cpu:6.2f} s  ({cpu / reply.requested * 1e6:,.0f} us per voucher: "
              "claims, answers, audit, logs; the Buffr calls run on the client's thread)")
        wires.append(wire_seconds(sim, n, conc, "after"))
        clients.append(client_seconds(sim.url, n, conc, "after"))
        wire, ceiling = statistics.median(wires), statistics.median(clients)
        limit = max(latency_bound, wire)
        ratio = elapsed / limit
        print(f"  latency bound (N*lat/conc)   {latency_bound:6.2f} s")
        print(f"  wire ceiling (bare client)   {wire:6.2f} s  ({n / wire:,.0f} req/s; probes "
              f"{[round(w, 2) for w in wires]}, event loop {_wire.loop_name()})")
        print(f"  Buffr client (no database)   {ceiling:6.2f} s  ({n / ceiling:,.0f} req/s; probes "
              f"{[round(c, 2) for c in clients]})")
        print(f"  ratio_to_wire = elapsed / max(bound, wire) {ratio:5.2f}  (target <= 1.30: "
              f"{'met' if ratio <= 1.3 else 'NOT met'})")
        print(f"  elapsed / Buffr client       {elapsed / ceiling:6.2f}")
        figures = {"benchmark": "disburse_batch", "n": n, "latency_ms": args.latency_ms, "concurrency": conc,
                   "elapsed_s": round(elapsed, 2), "latency_bound_s": round(latency_bound, 2),
                   "wire_s": round(wire, 2), "client_s": round(ceiling, 2), "ratio_to_wire": round(ratio, 3),
                   "ratio_to_client": round(elapsed / ceiling, 3), "succeeded": reply.succeeded,
                   "double_credits": len(stats["double_credited"]),
                   "load_average": [round(x, 2) for x in os.getloadavg()]}
    finally:
        sim.stop()
        from smartpay import buffr, db
        buffr.reset_client()
        db.close_pool()
        _common.drop(args.database_name)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
