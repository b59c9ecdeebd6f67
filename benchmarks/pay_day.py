"""A national pay day on the local stack, end to end, every step timed.

Payroll import of N (default 300,000; ``--quick`` 20,000) → prepare (operator) → approve
(supervisor) → the run through the cycle queue at the agreed rate (``--rate``, Buffr's latency
``latency ± jitter``) → the simulator's webhooks → reconciliation → the cycle's compliance report.
Printed:

* each stage's time; prepare's and approve's latencies beside API Gateway's 29 s (target ≤ 10 s);
* the run: elapsed from approval to completed, its ratio to the bound N / rate;
* the busiest one-second window at the simulator: disburse calls, and every call (status reads too),
  beside the agreed rate (limit + 5 %), and every call by the senders' own clock (each request's
  write, :mod:`smartpay_tools.local.send_trace`): the simulator shares this box's cores, so its
  arrival stamps lag in bursts that the senders did not send;
* goodput (credits per second) against the fault-free bound (the rate), Buffr calls, credits,
  double credits (0), the load average (the box is shared: a busy box slows every figure).

``--faults 5xx=0.1,timeout=0.02,429=0.02`` injects faults at the simulator (a timeout holds the
call ``--hang-ms``); ``--reconcile-during`` runs a full reconciliation while the run sends.
``--stop-after approve`` times import, prepare and approve only; ``--stop-after run`` ends after the run. The consumers' containers are
started before approval, as Lambda's are warm after the day's first invocations (``--cold`` leaves
them cold; cold starts are ``benchmarks/cold_start.py``'s). Ends with one JSON line.

    python benchmarks/pay_day.py [--vouchers 300000 | --quick] [--rate 200] [--faults ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common

from smartpay_tools.buffr_sim.state import busiest_second
from smartpay_tools.local import send_trace

PROGRAMME, CYCLE = "old_age", "2026-11"
DB = f"smartpay_bench_pay_day_{os.getpid()}"  # one per concurrent run
FAULT_KNOBS = {"5xx": "error_rate", "timeout": "timeout_rate", "429": "rate_429"}


def faults(text: str) -> dict[str, float]:
    """``5xx=0.1,timeout=0.02,429=0.02`` → the simulator's knobs."""
    knobs = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in FAULT_KNOBS:
            raise argparse.ArgumentTypeError(f"unknown fault {name!r}; known: {', '.join(FAULT_KNOBS)}")
        knobs[FAULT_KNOBS[name]] = float(value)
    return knobs


def import_payroll(url: str, n: int) -> tuple[int, float]:
    """N payroll rows of one programme imported (the file's generation is not timed)."""
    from smartpay_tools.data import datagen, payroll_import

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "payroll.csv"
        datagen.generate_payroll_file(path, int(n / 0.967) + 1, CYCLE, programme=PROGRAMME)  # ~3 % inactive: left out
        started = time.monotonic()
        report = payroll_import.import_file(url, path)
        return report.vouchers_issued, time.monotonic() - started


def warm_consumers(stack: Any, n: int) -> None:
    """``n`` consumer containers started side by side, each on a stale chunk message it drops."""
    def record() -> dict[str, Any]:
        body = json.dumps({"run_id": str(uuid.uuid4()), "chunk_no": 0, "token": str(uuid.uuid4()),
                           "voucher_ids": [str(uuid.uuid4())]})
        return {"messageId": str(uuid.uuid4()), "receiptHandle": "warm-up", "body": body, "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:af-south-1:000000000000:warm-up", "awsRegion": stack.region}

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: stack.invoke("DisburseFunction", {"Records": [record()]}), range(n)))


def print_timeline(url: str, run_id: str) -> None:
    """Where the run's time went, from the database's clock: seconds after the approval."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT extract(epoch FROM min(c.enqueued_at) - r.approved_at) AS first_enqueued,
                      extract(epoch FROM max(c.enqueued_at) - r.approved_at) AS last_enqueued,
                      (SELECT extract(epoch FROM min(e.at) - r.approved_at) FROM voucher_events e
                        WHERE e.reference = 'cycle-run:' || r.id AND e.to_status = 'pending') AS first_claim,
                      extract(epoch FROM r.finished_at - r.approved_at) AS completed
                 FROM cycle_runs r JOIN cycle_run_chunks c ON c.run_id = r.id WHERE r.id = %s
                GROUP BY r.id""", (run_id,)).fetchone()
    print("  after approval: first chunk enqueued {:.1f} s, last {:.1f} s; first claim {:.1f} s; completed {:.1f} s"
          .format(*(float(v or 0) for v in row)), flush=True)


def reconcile_all(stack: Any, n: int, rate: float) -> dict[str, Any]:
    """Reconciliation as its schedule runs it: invocation after invocation (each stops before the
    function's timeout and the next resumes at its cursor) until nothing remains; the last reply,
    with how many invocations it took."""
    limit = math.ceil(n / rate / 600) + 3  # an invocation checks about 10 minutes of the rate, or more
    invocations = 0
    while True:
        invocations += 1
        reply = stack.invoke("ReconcileFunction", {"mode": "incremental"})
        if reply.get("remaining", 0) <= 0 or reply.get("status") == "completed" or invocations >= limit:
            return {**reply, "invocations": invocations}


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vouchers", type=int, default=None, help="N (default 300,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 vouchers (unless --vouchers says)")
    parser.add_argument("--rate", type=int, default=200, help="BuffrMaxRatePerSecond (the template default)")
    parser.add_argument("--concurrency", type=int, default=5, help="CycleQueueMaxConcurrency")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="Buffr's mean latency per call")
    parser.add_argument("--jitter-ms", type=float, default=50.0, help="± around the mean (uniform)")
    parser.add_argument("--faults", type=faults, default={}, help="e.g. 5xx=0.1,timeout=0.02,429=0.02")
    parser.add_argument("--hang-ms", type=float, default=2000.0, help="how long an injected timeout holds a call")
    parser.add_argument("--reconcile-during", action="store_true", help="a full reconciliation while the run sends")
    parser.add_argument("--no-webhooks", action="store_true", help="the simulator sends no webhooks")
    parser.add_argument("--stop-after", choices=["approve", "run"], help="stop after this stage")
    parser.add_argument("--cold", action="store_true", help="leave the consumers' containers cold")
    parser.add_argument("--per-second", action="store_true", help="print Buffr's calls in each second of the run")
    args = parser.parse_args()
    n_wanted = args.vouchers or (20_000 if args.quick else 300_000)

    from smartpay_tools.cli.cycle import CycleApi
    from smartpay_tools.local.gateway import Gateway, serve
    from smartpay_tools.local.services import free_port
    from smartpay_tools.local.stack import LocalStack

    url = _common.fresh_database(DB)
    stack = server = None
    stages: dict[str, float] = {}
    closing = contextlib.ExitStack()
    try:
        stamps = closing.enter_context(_common.sender_stamps())  # before the stack starts its workers
        n, stages["import"] = import_payroll(url, n_wanted)
        print(f"import       {stages['import']:8.1f} s   {n:,} vouchers issued", flush=True)
        port = free_port()
        gateway_url = f"http://127.0.0.1:{port}"
        stack = LocalStack(database_url=url, simulator_port=0, webhook_url=gateway_url, max_concurrency=2,
                           webhook_knobs={"enabled": not args.no_webhooks},
                           template_parameters={"BuffrMaxRatePerSecond": str(args.rate),
                                                "CycleQueueMaxConcurrency": str(args.concurrency)},
                           extra_env={"LOG_LEVEL": "WARNING", "POWERTOOLS_LOG_LEVEL": "WARNING"})
        stack.start_services(migrate=False)
        try:  # the simulator stands in for Buffr's own servers: its clock is when a call arrived
            os.setpriority(os.PRIO_PROCESS, stack.buffr.process.pid, -10)
        except PermissionError:
            print("note: the simulator's priority could not be raised; its busiest second includes its own "
                  "scheduling lag", flush=True)
        server = serve(Gateway(stack), port=port)
        stack.start_event_sources()
        stack.buffr.reset(latency_ms=args.latency_ms - args.jitter_ms, jitter_ms=2 * args.jitter_ms)
        api = CycleApi(gateway_url, PROGRAMME, CYCLE, timeout_s=120)
        operator, supervisor = stack.local["OperatorApiKey"], stack.local["SupervisorApiKey"]
        prepared, stages["prepare"] = timed(api.prepare, operator, "pay-day")
        print(f"prepare      {stages['prepare']:8.1f} s   (API Gateway's limit 29 s; target <= 10 s)", flush=True)
        if not args.cold:
            warm_consumers(stack, args.concurrency)
        if args.faults:
            stack.buffr.configure(**args.faults, hang_ms=args.hang_ms)
        started = time.monotonic()
        _, stages["approve"] = timed(api.approve, supervisor, prepared["run_id"], prepared["fingerprint"])
        print(f"approve      {stages['approve']:8.1f} s   (API Gateway's limit 29 s; target <= 10 s)", flush=True)
        if args.stop_after == "approve":
            api.close()
            return _report(args, n, stages, None, None, None)
        during: dict[str, Any] = {}
        if args.reconcile_during:
            thread = threading.Thread(target=lambda: during.update(
                stack.invoke("ReconcileFunction", {"mode": "full"})), daemon=True)
            thread.start()
        run = api.watch(operator, every_s=0.1 if n <= 5_000 else 0.5 if n <= 20_000 else 5.0, timeout_s=4 * n / args.rate + 300,
                        on_progress=_common.progress_printer(started))
        stages["run"] = time.monotonic() - started
        api.close()
        sim = stack.buffr.stats(detail=True)
        sim["sent_times"] = send_trace.read(stamps)  # every request the functions wrote, by their clock
        print(f"run          {stages['run']:8.1f} s   {run['status']}, {stages['run'] / (n / args.rate):.2f} x N/rate",
              flush=True)
        stack.buffr.configure(error_rate=0, timeout_rate=0, rate_429=0)  # the pay day's afterwards is calm
        if args.reconcile_during:
            thread.join(timeout=4 * n / args.rate + 300)
        sim["started"] = started  # the simulator's clock is this machine's monotonic clock
        print_timeline(url, run["run_id"])
        if args.stop_after == "run":
            return _report(args, n, stages, run, sim, during)
        if not args.no_webhooks:
            flushed, stages["webhooks"] = timed(stack.buffr.flush_webhooks, 4 * n / args.rate + 300)
            print(f"webhooks     {stages['webhooks']:8.1f} s   after the run ({'all answered' if flushed else 'NOT flushed'})",
                  flush=True)
        reconciled, stages["reconcile"] = timed(reconcile_all, stack, n, args.rate)
        print(f"reconcile    {stages['reconcile']:8.1f} s   {reconciled['invocations']} invocation(s), checked "
              f"{reconciled.get('checked')}, matched {reconciled.get('matched')}, healed {reconciled.get('healed')}, "
              f"flagged {reconciled.get('flagged')}, remaining {reconciled.get('remaining')}", flush=True)
        compliance, stages["compliance"] = timed(stack.invoke, "ReconcileFunction", {
            "report": {"compliance": True, "programme": PROGRAMME, "cycle": CYCLE}})
        print(f"compliance   {stages['compliance']:8.1f} s   arithmetic "
              f"{'ok' if compliance.get('arithmetic', {}).get('ok') else 'FAILED'}", flush=True)
        return _report(args, n, stages, run, sim, during, reconciled)
    finally:
        if server is not None:
            server.shutdown()
        if stack is not None:
            stack.stop()
        closing.close()
        _common.drop(DB)


def _report(args: argparse.Namespace, n: int, stages: dict[str, float], run: dict[str, Any] | None,
            sim: dict[str, Any] | None, during: dict[str, Any] | None, reconciled: dict[str, Any] | None = None) -> int:
    load = os.getloadavg()[0]
    out: dict[str, Any] = {"benchmark": "pay_day", "vouchers": n, "agreed_rate": args.rate,
                           "consumers": args.concurrency, "latency_ms": args.latency_ms, "jitter_ms": args.jitter_ms,
                           "faults": args.faults, "reconcile_during": args.reconcile_during, "cold": args.cold,
                           "stages_s": {k: round(v, 1) for k, v in stages.items()}, "load_average": round(load, 1)}
    ok = stages["prepare"] <= 10 and stages["approve"] <= 10
    if run is not None and sim is not None:
        bound = n / args.rate
        busiest = busiest_second(sim["disburse_times"])
        combined = busiest_second(sim["disburse_times"] + sim["status_times"])
        sent = busiest_second(sim["sent_times"])
        goodput = sim["credits"] / stages["run"]
        calls = sorted(sim["disburse_times"])
        first, last = (calls[0] - sim["started"], calls[-1] - sim["started"]) if calls else (0.0, 0.0)
        print(f"\n{n:,} vouchers, agreed rate {args.rate}/s, {args.concurrency} consumers, Buffr at "
              f"{args.latency_ms:.0f} ± {args.jitter_ms:.0f} ms, faults {args.faults or 'none'} "
              f"(load average {load:.1f})")
        print(f"  run                 {stages['run']:8.1f} s = {stages['run'] / bound:.2f} x N/rate ({bound:.1f} s)")
        print(f"  Buffr's first call  {first:8.1f} s after approval, last {last:.1f} s; sending "
              f"{(last - first) / bound:.2f} x N/rate")
        if args.per_second:
            counts = [0] * (int(last) + 1)
            for t in calls:
                counts[int(t - sim["started"])] += 1
            print("  calls per second    " + " ".join(str(c) for c in counts))
        print(f"  goodput             {goodput:8.1f} credits/s = {goodput / args.rate:.2f} x the fault-free bound")
        print(f"  busiest second      {busiest:8d} disburse calls, {combined} calls in all "
              f"({combined / args.rate:.3f} x the agreed rate; limit 1.05)")
        print(f"  busiest second sent {sent:8d} calls in all by the senders' clock ({sent / args.rate:.3f} x; the "
              f"simulator's figure adds its own scheduling lag)")
        print(f"  Buffr calls         {sim['calls'].get('disburse', 0):8,d} disburse, {sim['calls'].get('status', 0):,} "
              f"status; credits {sim['credits']:,}; double credits {len(sim['double_credited'])}")
        out.update({"status": run["status"], "run_s": round(stages["run"], 1), "rate_bound_s": round(bound, 1),
                    "ratio": round(stages["run"] / bound, 3), "goodput_per_s": round(goodput, 1),
                    "goodput_ratio": round(goodput / args.rate, 3),
                    "first_call_s": round(first, 1), "last_call_s": round(last, 1), "busiest_second": busiest,
                    "busiest_second_all_calls": combined, "busiest_second_sent": sent, "disburse_calls": sim["calls"].get("disburse", 0),
                    "status_calls": sim["calls"].get("status", 0), "credits": sim["credits"],
                    "double_credits": len(sim["double_credited"]),
                    "reconcile_during_checked": (during or {}).get("checked")})
        if reconciled is not None:
            out.update({"reconcile_invocations": reconciled["invocations"], "reconcile_checked": reconciled.get("checked"),
                        "reconcile_remaining": reconciled.get("remaining")})
            ok = ok and reconciled.get("remaining", 0) <= 0
        ok = ok and run["status"] == "completed" and not sim["double_credited"]
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
