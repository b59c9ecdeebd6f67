"""The reconciliation table, the manual event model, the rate limit and the report rendering."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile.classify import classify
from reconcile.handler import InvalidEvent, _request
from reconcile.report import money
from smartpay.buffr import Pacer
from smartpay.lifecycle import VoucherStatus

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=15)


def _v(status: str, amount: int = 1000, age: timedelta = timedelta(hours=1)) -> dict:
    return {"status": status, "amount_cents": amount, "status_changed_at": NOW - age}


def _found(status: str, amount: int = 1000) -> tuple[str, dict]:
    return "found", {"status": status, "amount": amount, "deliveryId": "dlv_1"}


@pytest.mark.parametrize("ours, answer, klass, plan, target", [
    ("active", _found("active"), None, "none", None),
    ("active", _found("redeemed"), "buffr_ahead", "heal", "redeemed"),
    ("pending", _found("active"), "buffr_ahead", "heal", "active"),
    ("pending", _found("delivered"), "buffr_ahead", "heal", "active"),
    ("pending", _found("redeemed"), "buffr_ahead", "heal", "redeemed"),
    ("active", _found("expired"), "buffr_ahead", "heal", "expired"),
    ("redeemed", _found("active"), "ketchup_ahead", "flag", None),
    ("active", ("not_found", {}), "unknown_at_buffr", "flag", None),
    ("redeemed", ("not_found", {}), "unknown_at_buffr", "flag", None),
    ("active", _found("active", 999), "amount_mismatch", "flag", None),
    ("active", _found("redeemed", 999), "amount_mismatch", "flag", None),  # money first: never healed
    ("expired", _found("redeemed"), "redeemed_vs_expired", "heal_flag", "redeemed"),
    ("redeemed", _found("expired"), "redeemed_vs_expired", "flag", None),
    ("cancelled", _found("redeemed"), "status_conflict", "flag", None),
    ("failed", _found("active"), "status_conflict", "flag", None),
    ("active", _found("on_hold"), "unrecognised_status", "flag", None),
    ("issued", ("not_found", {}), None, "none", None),
    ("failed", ("not_found", {}), None, "none", None),
    ("pending", ("not_found", {}), "pending_unknown", "redisburse_or_flag", None),
    ("active", ("unavailable", {}), "unavailable", "none", None),
])
def test_classification_table(ours, answer, klass, plan, target) -> None:
    verdict = classify(_v(ours), answer[0], answer[1], now=NOW, grace=GRACE, error="timeout")
    assert (verdict.discrepancy, verdict.plan, verdict.target) == (klass, plan, target)
    assert verdict.match == (klass is None)


def test_pending_within_grace_is_not_a_discrepancy_yet() -> None:
    young = classify(_v("pending", age=timedelta(minutes=5)), "not_found", {}, now=NOW, grace=GRACE)
    old = classify(_v("pending", age=timedelta(minutes=16)), "not_found", {}, now=NOW, grace=GRACE)
    assert (young.discrepancy, young.plan) == ("pending_in_grace", "none")
    assert (old.discrepancy, old.plan) == ("pending_unknown", "redisburse_or_flag")


def test_every_heal_is_a_forward_edge_of_the_lifecycle() -> None:
    from smartpay.lifecycle import decide

    for ours in VoucherStatus:
        for theirs in ("active", "redeemed", "expired", "cancelled"):
            verdict = classify(_v(ours.value), *_found(theirs), now=NOW, grace=GRACE)
            if verdict.plan in ("heal", "heal_flag"):
                assert decide(ours, verdict.target).applies


@pytest.mark.parametrize("event, message", [
    ({"mode": "sometimes"}, "mode"),
    ({"shard": 3, "shards": 2}, "shard must be in 0..shards-1"),
    ({"voucher_ids": ["not-a-uuid"]}, "voucher_ids.0"),
    ({"voucher_ids": []}, "voucher_ids"),
    ({"mode": "vouchers"}, "needs voucher_ids"),
    ({"since": "2026-11-01T00:00:00"}, "time zone"),
    ({"dryrun": True}, "dryrun: Extra inputs are not permitted"),
    ({"voucher_ids": ["3f0b6a52-8f1e-4b5e-9a51-2d9f1f0c7a10"], "shards": 2}, "do not combine"),
])
def test_bad_events_fail_with_the_field_named(event, message) -> None:
    with pytest.raises(InvalidEvent, match="invalid reconciliation event") as info:
        _request(event)
    assert message in str(info.value)


def test_saved_events_parse() -> None:
    folder = Path(__file__).resolve().parents[2] / "events" / "reconcile"
    seen = set()
    for path in folder.glob("*.json"):
        event = json.loads(path.read_text())
        if "report" not in event:
            seen.add(_request(event).mode)
    assert seen == {"incremental", "full", "vouchers"}
    scheduled = _request(json.loads((folder / "scheduled.json").read_text()))
    assert (scheduled.mode, scheduled.shards, scheduled.dry_run) == ("incremental", 1, False)


def test_pacer_spaces_call_starts() -> None:
    async def run() -> list[float]:
        pacer = Pacer(50.0)
        starts = []
        for _ in range(11):
            await pacer.wait()
            starts.append(time.monotonic())
        return starts

    starts = asyncio.run(run())
    assert starts[-1] - starts[0] >= 10 / 50 - 0.005


def test_pacer_does_not_burst_after_the_loop_stalls() -> None:
    """Concurrent waiters and a loop that stalls (a busy core): the waiters that were due do not
    all start at once when it resumes; any two starts apart are at least one interval apart."""
    interval = 1 / 50

    async def run() -> list[float]:
        pacer = Pacer(50.0)
        starts: list[float] = []

        async def one() -> None:
            await pacer.wait()
            starts.append(time.monotonic())

        tasks = [asyncio.create_task(one()) for _ in range(30)]
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # the loop is held: ten slots pass without anyone running
        await asyncio.gather(*tasks)
        return starts

    starts = asyncio.run(run())
    assert len(starts) == 30
    closest = min(later - earlier for earlier, later in zip(starts, starts[2:], strict=False))
    assert closest >= interval - 0.002, closest


def test_money_is_formatted_from_integer_cents() -> None:
    assert money(0) == "N$ 0.00"
    assert money(140000) == "N$ 1,400.00"
    assert money(123456789) == "N$ 1,234,567.89"
    assert money(-5) == "-N$ 0.05"
