"""Which HTTP client for Buffr: each candidate beside the wire ceiling, against one simulator, one run.

N status calls at concurrency C (the reconciliation's pattern) through each candidate, rounds
alternated so machine noise hits all alike, medians printed with each one's share of the wire:

* ``wire``: the bare client of ``_wire.py`` (asyncio streams + a minimal HTTP/1.1 writer/parser)
  on uvloop, as the Buffr client runs, and once on asyncio's own loop (what uvloop is worth);
* ``BuffrClient``: the project's client as deployed (retry policy, timeouts, prebuilt request
  bytes over ``smartpay.buffr_transport.StreamTransport``);
* ``BuffrClient + httpx-aiohttp``: the same client over httpx's API on aiohttp's transport;
* ``BuffrClient + httpx``: the same client over httpx's own transport (httpcore, h11);
* ``aiohttp``: a bare ``aiohttp.ClientSession`` loop (C parser, no retry policy): what adopting
  aiohttp could at best give.

    python benchmarks/buffr_clients.py [--n 20000] [--concurrency 100] [--latency-ms 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid

import _common  # noqa: F401 - puts the layer and the tools on the path
import _wire

KEY = "bench-buffr-key"


def buffr_client(sim_url: str, ids: list[str], concurrency: int, transport: str) -> float:
    from smartpay import buffr

    extra = {}
    if transport == "httpx":
        import httpx

        extra["transport"] = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=concurrency))
    elif transport == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        extra["transport"] = AiohttpTransport()
    client = buffr.BuffrClient(buffr.BuffrSettings(url=sim_url, concurrency=concurrency), api_key=KEY, **extra)
    try:
        client.status_many(ids[:concurrency * 2], deadline=time.monotonic() + 60)  # connections up (warm)
        started = time.perf_counter()
        results = client.status_many(ids, deadline=time.monotonic() + 600)
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    bad = [r for r in results if r.outcome != "found"]
    assert not bad, f"{transport}: {len(bad)} calls failed, e.g. {bad[0]}"
    return elapsed


def bare_aiohttp(sim_url: str, ids: list[str], concurrency: int) -> float:
    import aiohttp

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(sim_url, connector=connector,
                                         headers={"authorization": f"Bearer {KEY}"}) as session:
            gate = asyncio.Semaphore(concurrency)

            async def one(vid: str) -> None:
                async with gate, session.get(f"/api/v1/vouchers/{vid}") as reply:
                    reply.raise_for_status()
                    await reply.json()

            await asyncio.gather(*(one(v) for v in ids[:concurrency * 2]))
            started = time.perf_counter()
            await asyncio.gather(*(one(v) for v in ids))
            return time.perf_counter() - started

    loop = _wire.new_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-n", type=int, default=1000,
                        help="calls for the httpx (httpcore) candidate, which is far slower")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from smartpay_tools.buffr_sim.process import SimulatorProcess

    n, conc = args.n, args.concurrency
    sim = SimulatorProcess(port=0, api_key=KEY).start()
    try:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        for start in range(0, n, 50_000):
            sim.load([{"voucher_id": v, "status": "active", "amount": 140000} for v in ids[start:start + 50_000]])
        sim.configure(latency_ms=args.latency_ms)
        wire_requests = _wire.status_requests(sim.host, sim.port, KEY, ids)
        slow_n = min(args.slow_n, n)
        calls = {"BuffrClient + httpx": slow_n}
        candidates = {
            "wire": lambda: _wire.wire(sim.host, sim.port, wire_requests, conc),
            "wire on asyncio's own loop": lambda: _wire.wire(sim.host, sim.port, wire_requests, conc, uvloop=False),
            "BuffrClient": lambda: buffr_client(sim.url, ids, conc, "stream"),
            "BuffrClient + httpx-aiohttp": lambda: buffr_client(sim.url, ids, conc, "httpx-aiohttp"),
            "BuffrClient + httpx": lambda: buffr_client(sim.url, ids[:slow_n], conc, "httpx"),
            "aiohttp (bare session)": lambda: bare_aiohttp(sim.url, ids, conc),
        }
        times: dict[str, list[float]] = {name: [] for name in candidates}
        load = os.getloadavg()
        for _ in range(args.rounds):
            for name, run in candidates.items():
                times[name].append(run())
        bound = n * args.latency_ms / 1000 / conc
        wire_s = statistics.median(times["wire"])
        print(f"Buffr clients: {n:,} status calls, concurrency {conc}, simulator latency {args.latency_ms:g} ms, "
              f"{args.rounds} rounds alternated, medians; event loop {_wire.loop_name()}; load average "
              f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
        print(f"  latency bound N x latency / concurrency: {bound:.2f} s ({n / bound:,.0f}/s)")
        print(f"  {'client':32} {'calls':>7} {'seconds':>8} {'calls/s':>9} {'it / wire':>10}   rounds (s)")
        figures = {}
        wire_rate = n / wire_s
        for name, got in times.items():
            t, count = statistics.median(got), calls.get(name, n)
            share = count / t / wire_rate
            figures[name] = {"calls": count, "seconds": round(t, 3), "per_s": round(count / t),
                             "share_of_wire": round(share, 3)}
            print(f"  {name:32} {count:7,} {t:8.2f} {count / t:9,.0f} {share:10.2f}   {[round(x, 2) for x in got]}")
        print(json.dumps({"benchmark": "buffr_clients", "n": n, "concurrency": conc, "latency_ms": args.latency_ms,
                          "latency_bound_s": round(bound, 3), "wire_s": round(wire_s, 3),
                          "load_average": [round(x, 2) for x in os.getloadavg()], "clients": figures}))
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
