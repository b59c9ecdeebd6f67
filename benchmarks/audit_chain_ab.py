"""The audit hash chain end to end, A/B in one process (the limit: batch disburse and webhook
receipt may not regress by more than 5 %).

The machine is shared, so two separate benchmark runs (before / after) differ by far more than
5 % from load alone. Here both sides run in the same process, against the same simulator and the
same moto, interleaved in short blocks (ABBA…): database ``plain`` has the chain's trigger
dropped (no chain), ``chained`` has it. Load falls on both alike.

* webhook: the real handler (signature, Powertools idempotency on moto, state machine,
  PostgreSQL as ``smartpay_webhook``), fresh ``voucher.activated`` events, ``--block`` events per
  block (the pool re-opened at each switch; the first ``--warm`` of a block are not counted);
* batch: ``disburse.logic.batch.disburse_batch`` of ``--batch`` issued vouchers per block against the Buffr
  simulator (``--latency-ms``, concurrency 100), as ``smartpay_disburse``.

Prints each side's median (webhook p50 of all counted events; batch median of block times) and
chained / plain, limit 1.05.

    python benchmarks/audit_chain_ab.py [--blocks 8] [--block 300] [--batch 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import uuid
from typing import Any

import _common
from audit_chain import chain_database, ratio_line

KEY = "bench-buffr-key"
TABLE = "smartpay-idempotency-bench-ab"


def _seed(url: str, count: int, status: str, cycle: str) -> list[str]:
    import psycopg

    from smartpay.transitions import Change, transition_many
    from smartpay_tools.data import bulk_seed

    with psycopg.connect(url) as conn:
        start = conn.execute("SELECT count(*) FROM beneficiaries").fetchone()[0]
        ids = bulk_seed.issued_vouchers(conn, count, cycle=cycle, first=start + 1, reference="bench")
        bulk_seed.running_run(conn, ids, cycle=cycle)  # only a run's vouchers are claimed
        if status == "pending":
            transition_many(conn, [Change(v, "pending") for v in ids], source="disburse", reference="bench")
    return ids


def _route_metric_ms(calls: int = 3000) -> float:
    """What :func:`count_idempotent_request` (new with the chain's issue) costs per request, timed here."""
    from smartpay.observability import count_idempotent_request

    with contextlib.redirect_stdout(io.StringIO()):
        count_idempotent_request("webhook", replayed=False)
        t0 = time.perf_counter()
        for _ in range(calls):
            count_idempotent_request("webhook", replayed=False)
        return (time.perf_counter() - t0) / calls * 1000


def webhook_ab(urls: dict[str, str], blocks: int, block: int, warm: int) -> tuple[float, float]:
    import boto3
    from moto import mock_aws

    from smartpay import db, idempotency
    from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, payload, signed_headers
    from smartpay_tools.local import envfile
    from smartpay_tools.local.events import api_event
    from smartpay_tools.local.lambda_runtime import FakeLambdaContext
    from smartpay_tools.local.services import url_as

    secrets = envfile.load()["WebhookFunction"]["WEBHOOK_SECRET"]
    vouchers = {kind: _seed(url, blocks * block, "pending", "2026-11") for kind, url in urls.items()}
    os.environ.update({**_common.LOCAL_STAGE, "WEBHOOK_SECRET": secrets, "IDEMPOTENCY_TABLE": TABLE,
                       "POWERTOOLS_SERVICE_NAME": "webhook",
                       "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING",
                       "LOG_LEVEL": "WARNING", "AWS_DEFAULT_REGION": "af-south-1", "AWS_ACCESS_KEY_ID": "x",
                       "AWS_SECRET_ACCESS_KEY": "x"})
    times: dict[str, list[float]] = {k: [] for k in urls}
    with mock_aws():
        boto3.client("dynamodb").create_table(
            TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
        from webhook import handler

        for b in range(blocks):
            order = ("plain", "chained") if b % 4 in (0, 3) else ("chained", "plain")
            for kind in order:
                os.environ["DATABASE_URL"] = url_as(urls[kind], "smartpay_webhook")
                db.close_pool()
                idempotency._layers.clear()
                idempotency._configs.clear()
                for i, voucher_id in enumerate(vouchers[kind][b * block:(b + 1) * block]):
                    raw = encode(payload("voucher.activated", voucher_id, delivery_id=f"bfr_{voucher_id[:8]}"))
                    event = api_event("POST", WEBHOOK_PATH, body=raw,
                                      headers=signed_headers(secrets, raw, webhook_id=f"msg_{uuid.uuid4().hex}"))
                    context = FakeLambdaContext("bench", 512, str(uuid.uuid4()), time.time() * 1000 + 15000)
                    t0 = time.perf_counter()
                    with contextlib.redirect_stdout(io.StringIO()):
                        result = handler.lambda_handler(event, context)
                    elapsed = (time.perf_counter() - t0) * 1000
                    assert result["statusCode"] == 200, result
                    if i >= warm:
                        times[kind].append(elapsed)
    db.close_pool()
    return statistics.median(times["plain"]), statistics.median(times["chained"])


def batch_ab(urls: dict[str, str], blocks: int, batch: int,
             latency_ms: float) -> tuple[float, float, float, float]:
    from smartpay import buffr, db
    from smartpay.observability import logger
    from smartpay_tools.buffr_sim.process import SimulatorProcess

    logger.registered_handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    sim = SimulatorProcess(port=0, api_key=KEY).start()
    times: dict[str, list[float]] = {k: [] for k in urls}
    try:
        sim.configure(latency_ms=latency_ms)
        os.environ.update({"BUFFR_API_URL": sim.url, "BUFFR_API_KEY": KEY, "BUFFR_CONCURRENCY": "100",
                           "DB_POOL_SIZE": "2", "POWERTOOLS_LOG_LEVEL": "INFO"})
        from disburse import repository
        from disburse.logic import batch as send_pipeline
        from disburse.models import BatchRequest

        # The batch turns' statements (the only place the chain's trigger runs), timed on their own:
        # far less noisy than the batch's elapsed time, which is mostly Buffr's latency.
        turns = {"s": 0.0}
        original = repository.transition_many

        def timed_transition_many(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                turns["s"] += time.perf_counter() - t0

        repository.transition_many = timed_transition_many
        statements: dict[str, list[float]] = {k: [] for k in urls}
        from smartpay_tools.local.lambda_runtime import FakeLambdaContext
        from smartpay_tools.local.services import url_as

        for b in range(blocks):
            cycle = f"2025-{b % 12 + 1:02d}" if b < 12 else f"2024-{b % 12 + 1:02d}"
            order = ("plain", "chained") if b % 4 in (0, 3) else ("chained", "plain")
            for kind in order:
                ids = _seed(urls[kind], batch, "issued", cycle)
                os.environ["DATABASE_URL"] = url_as(urls[kind], "smartpay_disburse")
                db.close_pool()
                buffr.reset_client()
                context = FakeLambdaContext("bench", 1024, "bench", time.time() * 1000 + 600_000)
                turns["s"] = 0.0
                with contextlib.redirect_stdout(io.StringIO()):
                    t0 = time.perf_counter()
                    reply = send_pipeline.disburse_batch(BatchRequest(voucher_ids=ids), reference="bench", context=context)
                    times[kind].append(time.perf_counter() - t0)
                assert reply.succeeded == batch, reply
                statements[kind].append(turns["s"])
                print(f"    batch block {b} {kind:8} {times[kind][-1]:6.2f} s, of which turn statements "
                      f"{turns['s']:5.2f} s", flush=True)
    finally:
        sim.stop()
        buffr.reset_client()
        db.close_pool()
    return (statistics.median(times["plain"]), statistics.median(times["chained"]),
            statistics.median(statements["plain"]), statistics.median(statements["chained"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=8, help="blocks per side (ABBA order)")
    parser.add_argument("--block", type=int, default=300, help="webhook events per block")
    parser.add_argument("--warm", type=int, default=20, help="events at the start of a block not counted")
    parser.add_argument("--batch", type=int, default=1000, help="vouchers per batch block")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the simulator's latency per call")
    parser.add_argument("--only", choices=("webhook", "batch"), help="run one half only")
    args = parser.parse_args()
    sys.path.insert(0, str(_common.ROOT / "functions" / "webhook"))
    names = {"plain": "smartpay_bench_ab_plain", "chained": "smartpay_bench_ab_chained"}
    ok = True
    try:
        urls = {kind: chain_database(name, kind == "chained") for kind, name in names.items()}
        print(f"audit hash chain end to end, A/B interleaved (ABBA) in one process, {args.blocks} blocks per side:")
        if args.only != "batch":
            plain, chained = webhook_ab(urls, args.blocks, args.block, args.warm)
            ok &= ratio_line(f"webhook receipt p50 ({args.block - args.warm}/block)", plain, chained, "ms")
            emf_ms = _route_metric_ms()
            print(f"  + the per-route EMF line (IdempotentRequests/IdempotencyReplays, same code on both sides): "
                  f"{emf_ms:.3f} ms per request = {emf_ms / plain * 100:.1f} % of the plain p50; "
                  f"chain and line together: {(chained + emf_ms) / plain:5.3f}")
        if args.only != "webhook":
            plain, chained, plain_db, chained_db = batch_ab(urls, args.blocks, args.batch, args.latency_ms)
            ok &= ratio_line(f"batch of {args.batch} ({args.latency_ms:g} ms/call)", plain, chained, "s ")
            ratio_line("  of which turn statements", plain_db, chained_db, "s ")
            print(f"  the chain's share of the batch: (turn statements chained - plain) / batch plain = "
                  f"{(chained_db - plain_db) / plain * 100:+.1f} %")
    finally:
        for name in names.values():
            _common.drop(name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
