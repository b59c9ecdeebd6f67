"""Reconciliation throughput against the Buffr simulator.

From one run it prints:

* the wire ceiling: status calls through a bare client (``_wire.py``: asyncio streams + a
  minimal HTTP/1.1 writer/parser, same event loop and concurrency) against the same simulator,
  probed before and after the reconciliation (median), and the Buffr client's own ceiling
  (the same calls through ``BuffrClient``, no database work) probed alike;
* a full reconciliation of N open vouchers (separate process, like a Lambda): elapsed, the
  latency bound N x latency / concurrency, and ``ratio_to_wire`` = elapsed / max(latency
  bound, wire ceiling) (target ≤ 1.3);
* the integration guide's loop (one status call at a time, compare, insert) on a sample, and the
  per-voucher speed-up over it (target >= 50x whenever the wire ceiling is >= 4,000/s);
* peak memory (max RSS of the reconciling process) at two sizes (target ≤ 256 MB, flat in N);
* a 300,000-voucher cycle split in shards run side by side as separate processes (invocations),
  against the 15-minute Lambda window.

    .venv/bin/python benchmarks/reconcile.py [--n 100000] [--latency-ms 20] [--concurrency 100]
        [--sample 300] [--small 20000] [--cycle 300000] [--shards 4] [--probe 20000]

Ends with one JSON line of its figures (``ratio_to_wire``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
sys.path.append(str(Path(__file__).resolve().parent))  # _wire, after the function's own package

import _common  # noqa: E402
import _wire  # noqa: E402

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = f"smartpay_bench_reconcile_{os.getpid()}"  # own name: others may run it on the same server
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
    """n active vouchers (one beneficiary each, ID numbers first, first+1, …), all held by Buffr as active."""
    ids = _common.active_vouchers(url, n, cycle, first=first, amount=AMOUNT)
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

def wire_rate(sim: Any, ids: list[str], concurrency: int) -> float:
    """Status calls per second through the bare wire client."""
    return len(ids) / _wire.wire(sim.host, sim.port, _wire.status_requests(sim.host, sim.port, sim.api_key, ids),
                                 concurrency)


def client_rate(sim: Any, ids: list[str], concurrency: int) -> float:
    """Status calls per second through the Buffr client (same setup as reconciliation), no database."""
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
    return len(ids) / elapsed


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
    parser.add_argument("--probe", type=int, default=20_000, help="calls per wire / client probe")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child)

    from smartpay_tools.buffr_sim.process import SimulatorProcess
    from smartpay_tools.local.services import drop_database, free_port

    n, lat, conc = args.n, args.latency_ms / 1000, args.concurrency
    figures: dict[str, Any] = {}
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

        # 1. The limits, probed before the reconciliation (and once more after it, below).
        probe = ids[: args.probe]
        wires, clients = [wire_rate(sim, probe, conc)], [client_rate(sim, probe, conc)]
        wires.append(wire_rate(sim, probe, conc))
        bound = n * lat / conc

        # 2. The reconciliation itself (a fresh process: its peak memory is the run's).
        full = child_result(run_child(env, mode="full"))
        assert full["checked"] == n and full["status"] == "completed", full
        clients.append(client_rate(sim, probe, conc))
        wires.append(wire_rate(sim, probe, conc))
        wire = statistics.median(wires)
        client = statistics.median(clients)
        wire_s, client_s = n / wire, n / client
        limit = max(bound, wire_s)
        ratio = full["elapsed"] / limit
        print(f"\n[limits]    {len(probe):,}-call probes, concurrency {conc}, event loop {_wire.loop_name()}: "
              f"wire {wire:,.0f}/s (probes {[round(w) for w in wires]}), Buffr client {client:,.0f}/s "
              f"(probes {[round(c) for c in clients]}), latency bound {conc / lat:,.0f}/s")
        print(f"[reconcile] {n:,} vouchers checked in {full['elapsed']:.1f} s ({n / full['elapsed']:,.0f}/s), "
              f"all matched: {full['matched'] == n}")
        print(f"  latency bound N x latency / concurrency = {bound:.1f} s")
        print(f"  wire ceiling (bare client)              = {wire_s:.1f} s")
        print(f"  Buffr client ceiling (no database)      = {client_s:.1f} s")
        print(f"  ratio_to_wire = elapsed / max(bound, wire) = {ratio:.2f}   (target <= 1.3: "
              f"{'met' if ratio <= 1.3 else 'NOT met'})")
        print(f"  elapsed / Buffr client ceiling          = {full['elapsed'] / client_s:.2f}")

        # 4. The guide's loop on a sample.
        sample = ids[: args.sample]
        seq = guide_loop(url, sim, sample)
        per_seq, per_rec = seq / len(sample), full["elapsed"] / n
        print(f"\n[guide loop] {len(sample)} vouchers one at a time: {seq:.1f} s = {per_seq * 1000:.1f} ms/voucher "
              f"(projected {per_seq * n / 60:.0f} min for {n:,}, {per_seq * args.cycle / 60:.0f} min for "
              f"{args.cycle:,})")
        speedup = per_seq / per_rec
        applies = wire >= 4000
        print(f"  reconcile: {per_rec * 1000:.3f} ms/voucher -> speed-up {speedup:.0f}x   (target >= 50x when the "
              f"wire ceiling is >= 4,000/s: {'applies' if applies else f'does not apply, wire {wire:,.0f}/s'}"
              f"{(': met' if speedup >= 50 else ': NOT met') if applies else ''})")

        # 4. Memory at two sizes (a new run each: the full one above is completed).
        small = child_result(run_child(env, mode="full", max_vouchers=args.small))
        print(f"\n[memory] peak RSS of the reconciling process: {small['maxrss_mb']:.0f} MB at "
              f"{small['checked']:,} vouchers, {full['maxrss_mb']:.0f} MB at {n:,}   (target <= 256 MB, flat)")

        # 5. A whole cycle in shards, side by side.
        figures.update({"benchmark": "reconcile", "n": n, "latency_ms": args.latency_ms, "concurrency": conc,
                   "elapsed_s": round(full["elapsed"], 2), "latency_bound_s": round(bound, 2),
                   "wire_per_s": round(wire), "wire_s": round(wire_s, 2), "client_per_s": round(client),
                   "ratio_to_wire": round(ratio, 3), "ratio_to_client": round(full["elapsed"] / client_s, 3),
                   "guide_ms_per_voucher": round(per_seq * 1000, 2), "speedup_over_guide": round(speedup, 1),
                   "peak_rss_mb": [round(small["maxrss_mb"]), round(full["maxrss_mb"])]})
        if args.cycle <= 0:
            return 0
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
        figures["cycle_wall_s"] = round(wall, 1)
    finally:
        sim.stop()
        drop_database(ADMIN_URL, DB_NAME)
        if figures:
            figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
