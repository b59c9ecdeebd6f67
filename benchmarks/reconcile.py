"""Reconciliation throughput against the Buffr simulator (issue 5, "Performance").

From one run it prints:

* the simulator's own capacity (a bare asyncio HTTP/1.1 client, no httpx) — to show it is not
  the bottleneck;
* the HTTP client's ceiling: N bare status calls through the shared Buffr client, same setup
  (StreamTransport, concurrency 100), no database work;
* a full reconciliation of N open vouchers (separate process, like a Lambda): elapsed, the
  latency bound N x latency / concurrency, and elapsed / max(latency bound, client ceiling)
  (target ≤ 1.3: reconciliation adds at most 30 % to the pure HTTP cost);
* the integration guide's loop (one status call at a time, compare, insert) on a sample, and the
  per-voucher speed-up over it (target >= 50x);
* peak memory (max RSS of the reconciling process) at two sizes (target ≤ 256 MB, flat in N);
* a 300,000-voucher cycle split in shards run side by side as separate processes (invocations),
  against the 15-minute Lambda window.

    .venv/bin/python benchmarks/reconcile.py [--n 100000] [--latency-ms 20] [--concurrency 100]
        [--sample 300] [--small 20000] [--cycle 300000] [--shards 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This script is named like the function's package: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
for sub in ("layers/core", "tools", "functions/reconcile"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = "smartpay_bench_reconcile"
AMOUNT = 140000


# --- set-up -------------------------------------------------------------------------------------

def fresh_database() -> str:
    from smartpay import migrate
    from smartpay_tools.local.services import drop_database, ensure_database

    drop_database(ADMIN_URL, DB_NAME)
    url = ensure_database(ADMIN_URL, DB_NAME)
    migrate.apply(url)
    return url


def seed(url: str, sim: Any, n: int, cycle: str, first: int = 0) -> list[str]:
    """n active vouchers (one beneficiary each, ID numbers first, first+1, …) by COPY, all held by
    Buffr as active."""
    import psycopg

    ids = [str(uuid.uuid4()) for _ in range(n)]
    people = [str(uuid.uuid4()) for _ in range(n)]
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy("COPY beneficiaries (id, id_number, first_name, last_name, msisdn, region, programme) "
                      "FROM STDIN") as copy:
            for i, b in enumerate(people):
                copy.write_row((b, f"{first + i:011d}", "Bench", "Person", f"+26481{i % 10**7:07d}",
                                "Khomas", "old_age"))
        with cur.copy("COPY vouchers (id, beneficiary_id, programme, cycle, amount_cents, status, buffr_delivery_id, "
                      "issued_at, expires_at, status_changed_at) FROM STDIN") as copy:
            for v, b in zip(ids, people, strict=True):
                copy.write_row((v, b, "old_age", cycle, AMOUNT, "active", f"dlv_{v[:8]}", "2026-11-01T00:00:00Z",
                                "2026-12-31T00:00:00Z", "2026-11-01T01:00:00Z"))
        cur.execute("ANALYZE vouchers")
    for start in range(0, n, 50_000):
        sim.load([{"voucher_id": v, "status": "active", "amount": AMOUNT} for v in ids[start:start + 50_000]])
    return ids


def child_env(url: str, sim: Any, concurrency: int) -> dict[str, str]:
    from smartpay_tools.local.services import url_as

    return {**os.environ, "STAGE": "local", "DATABASE_SSLMODE": "disable", "DATABASE_URL": url_as(url, "smartpay_reconcile"), "DATABASE_URL_SECRET": "",
            "BUFFR_API_URL": sim.url, "BUFFR_API_KEY": sim.api_key, "BUFFR_CONCURRENCY": str(concurrency),
            "BUFFR_READ_TIMEOUT_S": "5", "RECONCILE_PAGE_SIZE": "2000", "RECONCILE_SAFETY_MARGIN_S": "10",
            "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "KetchupSmartPay",
            "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "reconcile",
            "PYTHONPATH": os.pathsep.join(str(ROOT / s) for s in ("layers/core", "tools", "functions/reconcile"))}


def run_child(env: dict[str, str], **request: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--child", json.dumps(request)], env=env,
                            stdout=subprocess.PIPE, text=True)


def child_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"reconcile child failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space;
    getrusage's ru_maxrss would carry the parent's peak across fork + exec on Linux."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_main(raw: str) -> int:
    """One reconciliation invocation in this process (a Lambda with a 900 s timeout)."""
    import io
    from contextlib import redirect_stdout

    from reconcile import service
    from reconcile.models import ReconcileRequest
    from smartpay_tools.local.lambda_runtime import FakeLambdaContext

    request = ReconcileRequest(**json.loads(raw))
    context = FakeLambdaContext("smartpay-reconcile-bench", 1024, str(uuid.uuid4()), time.time() * 1000 + 900_000)
    started = time.perf_counter()
    with redirect_stdout(io.StringIO()):  # metrics lines
        reply = service.reconcile(request, context)
    elapsed = time.perf_counter() - started
    maxrss_mb = _peak_rss_mb()
    print(json.dumps({"elapsed": elapsed, "checked": reply.invocation_checked, "matched": reply.matched,
                      "status": reply.status, "remaining": reply.remaining, "maxrss_mb": maxrss_mb}))
    return 0


# --- HTTP measurements ----------------------------------------------------------------------------

async def _bare(host: str, port: int, ids: list[str], concurrency: int, key: str) -> float:
    """Status calls with nothing but asyncio streams and a hand-written HTTP/1.1 exchange."""
    queue = iter(ids)
    auth = f"Bearer {key}"

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        for vid in queue:
            writer.write(f"GET /api/v1/vouchers/{vid} HTTP/1.1\r\nhost: {host}\r\nauthorization: {auth}\r\n\r\n"
                         .encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def bare_client(sim: Any, ids: list[str], concurrency: int) -> float:
    return asyncio.run(_bare(sim.host, sim.port, ids, concurrency, sim.api_key))


def client_ceiling(sim: Any, ids: list[str], concurrency: int) -> float:
    """The same calls through the shared Buffr client (same setup as reconciliation), no database."""
    from smartpay import buffr

    client = buffr.BuffrClient(buffr.BuffrSettings(url=sim.url, concurrency=concurrency), api_key=sim.api_key)
    try:
        client.status_many(ids[:200], deadline=time.monotonic() + 60)  # connections up, like a warm container
        started = time.perf_counter()
        results = client.status_many(ids, deadline=time.monotonic() + 1800)
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    assert all(r.outcome == "found" for r in results), "client ceiling: not every call succeeded"
    return elapsed


def guide_loop(url: str, sim: Any, ids: list[str]) -> float:
    """The integration guide's reconcileAll: one voucher at a time — status, compare, insert."""
    import httpx
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, httpx.Client(base_url=sim.url, timeout=10) as http:
        run_id = conn.execute("INSERT INTO reconciliation_runs (mode, options) VALUES ('vouchers', '{}') "
                              "RETURNING id").fetchone()[0]
        started = time.perf_counter()
        for vid in ids:
            status = conn.execute("SELECT status FROM vouchers WHERE id = %s", (vid,)).fetchone()[0]
            reply = http.get(f"/api/v1/vouchers/{vid}", headers={"authorization": f"Bearer {sim.api_key}"}).json()
            match = reply["status"] == status
            conn.execute("INSERT INTO reconciliation_records (run_id, voucher_id, ketchup_status, buffr_status, match, "
                         "action) VALUES (%s, %s, %s, %s, %s, 'none')", (run_id, vid, status, reply["status"], match))
        return time.perf_counter() - started


# --- main -----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--cycle", type=int, default=300_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child)

    from smartpay_tools.buffr_sim.server import SimulatorProcess
    from smartpay_tools.local.services import drop_database, free_port

    n, lat, conc = args.n, args.latency_ms / 1000, args.concurrency
    print(f"reconciliation benchmark: {n:,} open vouchers, simulator latency {args.latency_ms:g} ms, "
          f"concurrency {conc}, {os.cpu_count()} CPUs", flush=True)
    url = fresh_database()
    sim = SimulatorProcess(port=free_port()).start()
    try:
        t = time.perf_counter()
        ids = seed(url, sim, n, "2026-11")
        print(f"seeded {n:,} vouchers (COPY) and the simulator in {time.perf_counter() - t:.1f} s", flush=True)
        sim.configure(latency_ms=args.latency_ms)
        env = child_env(url, sim, conc)

        # 1. The simulator's capacity, with a client that costs next to nothing.
        probe = ids[:20_000]
        bare_100 = bare_client(sim, probe, conc)
        bare_200 = bare_client(sim, probe, 2 * conc)
        sim_rate = max(len(probe) / bare_100, len(probe) / bare_200)
        print(f"\n[simulator] bare asyncio client, {len(probe):,} calls: {len(probe) / bare_100:,.0f}/s at "
              f"concurrency {conc} (bound {conc / lat:,.0f}/s), {len(probe) / bare_200:,.0f}/s at {2 * conc}")

        # 2. The client's ceiling: the same N calls through the shared client, no database.
        ceiling = client_ceiling(sim, ids, conc)
        bound = n * lat / conc
        print(f"[client]    {n:,} bare status calls through the shared Buffr client: {ceiling:.1f} s "
              f"({n / ceiling:,.0f}/s)")

        # 3. The reconciliation itself (a fresh process: its peak memory is the run's).
        full = child_result(run_child(env, mode="full"))
        assert full["checked"] == n and full["status"] == "completed", full
        limit = max(bound, ceiling)
        print(f"\n[reconcile] {n:,} vouchers checked in {full['elapsed']:.1f} s ({n / full['elapsed']:,.0f}/s), "
              f"all matched: {full['matched'] == n}")
        print(f"  latency bound N x latency / concurrency = {bound:.1f} s")
        print(f"  client ceiling                          = {ceiling:.1f} s")
        print(f"  elapsed / max(bound, ceiling)           = {full['elapsed'] / limit:.2f}   (target <= 1.3)")
        print(f"  elapsed / client ceiling                = {full['elapsed'] / ceiling:.2f}")
        simulator_share = (n / full["elapsed"]) / sim_rate
        print(f"  simulator headroom: reconciliation used {simulator_share:.0%} of the rate the simulator "
              f"sustains ({sim_rate:,.0f}/s)")

        # 4. The guide's loop on a sample.
        sample = ids[: args.sample]
        seq = guide_loop(url, sim, sample)
        per_seq, per_rec = seq / len(sample), full["elapsed"] / n
        print(f"\n[guide loop] {len(sample)} vouchers one at a time: {seq:.1f} s = {per_seq * 1000:.1f} ms/voucher "
              f"(projected {per_seq * n / 60:.0f} min for {n:,}, {per_seq * args.cycle / 60:.0f} min for "
              f"{args.cycle:,})")
        print(f"  reconcile: {per_rec * 1000:.3f} ms/voucher -> speed-up {per_seq / per_rec:.0f}x   (target >= 50x)")

        # 5. Memory at two sizes (a new run each: the full one above is completed).
        small = child_result(run_child(env, mode="full", max_vouchers=args.small))
        print(f"\n[memory] peak RSS of the reconciling process: {small['maxrss_mb']:.0f} MB at "
              f"{small['checked']:,} vouchers, {full['maxrss_mb']:.0f} MB at {n:,}   (target <= 256 MB, flat)")

        # 6. A whole cycle in shards, side by side.
        extra = args.cycle - n
        if extra > 0:
            t = time.perf_counter()
            seed(url, sim, extra, "2026-10", first=n)
            print(f"\nseeded {extra:,} more vouchers ({args.cycle:,} open) in {time.perf_counter() - t:.1f} s",
                  flush=True)
        started = time.perf_counter()
        procs = [run_child(env, mode="full", shard=s, shards=args.shards) for s in range(args.shards)]
        parts = [child_result(p) for p in procs]
        wall = time.perf_counter() - started
        checked = sum(p["checked"] for p in parts)
        print(f"[shards] {args.shards} shards side by side (separate processes, concurrency {conc} each): "
              f"{checked:,} vouchers in {wall:.1f} s wall ({checked / wall:,.0f}/s)")
        for s, p in enumerate(parts):
            print(f"  shard {s}: {p['checked']:,} vouchers in {p['elapsed']:.1f} s, peak {p['maxrss_mb']:.0f} MB")
        print(f"  15-minute window: {wall / 900:.1%} used; the guide's loop would need "
              f"{per_seq * args.cycle / 60:.0f} min")
        assert checked == args.cycle, f"shards checked {checked}, expected {args.cycle}"
    finally:
        sim.stop()
        drop_database(ADMIN_URL, DB_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
