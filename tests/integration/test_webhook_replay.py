"""`smartpay replay` (saved files and stored rows) and Buffr's webhook sender, over the local gateway."""

import pytest

from smartpay_tools import PROJECT_ROOT, cli
from smartpay_tools.buffr_sim.webhook_sender import Knobs, WebhookSender
from tests import factories

pytestmark = pytest.mark.integration

SAVED = str(PROJECT_ROOT / "events/webhooks")
V = [f"7d3f1c2a-5b8e-4f61-9a0d-2c4e6b8a1f{n:02d}" for n in range(1, 6)]


@pytest.fixture()
def saved_vouchers(pg, fresh_idempotency):
    """The vouchers the saved examples refer to, as Ketchup would have them before the events."""
    b = factories.beneficiary(pg)
    for voucher_id, status, cycle in zip(V, ["pending", "pending", "active", "pending", "pending"],
                                         ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11"], strict=True):
        factories.voucher(pg, b["id"], id=voucher_id, status=status, cycle=cycle)
    return V


def snapshot(pg) -> dict:
    return {
        "vouchers": pg.execute("SELECT id, status, version, review_reason FROM vouchers ORDER BY id").fetchall(),
        "audit": pg.execute("SELECT voucher_id, from_status, to_status FROM voucher_events ORDER BY id").fetchall(),
        "log": pg.execute("SELECT webhook_id, outcome, reason FROM webhook_events ORDER BY id").fetchall(),
    }


def replay(capsys, *args: str, database_url: str | None = None) -> tuple[int, str]:
    code = cli.main([*(["--database-url", database_url] if database_url else []), "replay", *args, "--quiet"])
    return code, capsys.readouterr().out


def test_replaying_the_saved_examples_twice(gateway_url, pg, saved_vouchers, capsys) -> None:
    code, out = replay(capsys, SAVED, "--url", gateway_url)
    assert code == 0, out
    assert "outcomes: applied 7, ignored 1, rejected 1, replayed 1, stale 1, unauthorized 1" in out
    status = {r["id"]: r["status"] for r in snapshot(pg)["vouchers"]}
    assert [status[__import__("uuid").UUID(v)] for v in V] == ["redeemed", "expired", "cancelled", "failed",
                                                                "redeemed"]
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'webhook'") == 7
    outcomes = [(r["webhook_id"][-2:], r["outcome"]) for r in snapshot(pg)["log"]]
    assert outcomes == [("01", "applied"), ("03", "applied"), ("04", "applied"), ("05", "applied"),
                        ("06", "applied"), ("07", "applied"), ("08", "applied"), ("09", "stale"),
                        ("10", "ignored"), ("11", "rejected")]
    before = snapshot(pg)
    code, out = replay(capsys, SAVED, "--url", gateway_url)
    assert code == 0 and "outcomes: rejected 1, replayed 10, unauthorized 1" in out, out
    assert snapshot(pg) == before


def test_replay_from_stored_rows_changes_nothing(gateway_url, pg, pg_url, saved_vouchers, capsys) -> None:
    replay(capsys, SAVED, "--url", gateway_url)
    before = snapshot(pg)
    code, out = replay(capsys, "--from-db", "--url", gateway_url, database_url=pg_url)
    assert code == 0 and "outcomes: rejected 1, replayed 9" in out, out
    code, out = replay(capsys, "--from-db", "--outcome", "stale", "--url", gateway_url,
                           database_url=pg_url)
    assert "outcomes: replayed 1" in out
    code, out = replay(capsys, "--from-db", "--voucher", V[0], "--since", "1h", "--dry-run",
                       database_url=pg_url)
    assert code == 0 and out.count("re-signed") == 3 and "dry run: 3 deliveries" in out  # 01, 03 and 10
    assert snapshot(pg) == before


def test_replay_by_direct_invoke_after_the_idempotency_records_are_gone(pg, pg_url, saved_vouchers,
                                                                         gateway_url, capsys) -> None:
    replay(capsys, SAVED, "--url", gateway_url)
    applied = snapshot(pg)
    # A fresh local stack has an empty idempotency table: the state machine is the only guard left.
    code, out = cli.main(["--database-url", pg_url, "replay", "--from-db", "--invoke", "--quiet"]), \
        capsys.readouterr().out
    assert code == 0, out
    first = snapshot(pg)
    assert first["vouchers"] == applied["vouchers"] and first["audit"] == applied["audit"]
    assert {r["outcome"] for r in first["log"][len(applied["log"]):]} <= {"duplicate", "stale"}
    code = cli.main(["--database-url", pg_url, "replay", "--from-db", "--invoke", "--quiet"])
    capsys.readouterr()
    assert code == 0 and snapshot(pg) == first


def test_replay_usage_errors(capsys) -> None:
    assert cli.main(["replay"]) == 2
    assert cli.main(["replay", str(PROJECT_ROOT / "README.md")]) == 2
    assert "not a saved webhook" in capsys.readouterr().err


def test_sender_delivers_activation_then_outcome_with_faults(gateway_url, webhook_secrets, pg) -> None:
    b = factories.beneficiary(pg)
    vouchers = [factories.voucher(pg, b["id"], status="pending", cycle=f"20{20 + i // 12}-{i % 12 + 1:02d}")["id"]
                for i in range(24)]
    sender = WebhookSender(gateway_url, webhook_secrets, Knobs(redeem_rate=0.5, duplicate_rate=0.5,
                                                               reorder_rate=0.3, max_attempts=8), seed=11)
    try:
        for voucher_id in vouchers:
            sender.voucher_credited(voucher_id, f"bfr_{voucher_id[:8]}", 140000)
        assert sender.flush(120)
    finally:
        sender.close()
    stats = sender.stats
    assert stats.duplicated > 0 and stats.reordered > 0 and stats.failed == 0
    assert set(stats.statuses) <= {200, 409}
    final = {r["status"] for r in pg.execute("SELECT status FROM vouchers").fetchall()}
    assert final <= {"redeemed", "expired"}
    # in order: two real changes; reordered: the late activation is stale, one change
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'webhook'") == \
        2 * len(vouchers) - stats.reordered


def test_sender_drops_and_refuses_non_loopback(gateway_url, webhook_secrets, pg) -> None:
    voucher_id = factories.voucher(pg, factories.beneficiary(pg)["id"], status="pending")["id"]
    sender = WebhookSender(gateway_url, webhook_secrets, Knobs(drop_rate=1.0))
    try:
        sender.voucher_credited(voucher_id, "bfr_x", 140000)
        assert sender.flush(10)
    finally:
        sender.close()
    assert sender.stats.dropped == 2 and sender.stats.sent == 0
    assert pg.execute("SELECT status FROM vouchers").fetchone()["status"] == "pending"
    with pytest.raises(ValueError, match="loopback"):
        WebhookSender("https://example.com", webhook_secrets)
    with pytest.raises(ValueError):
        Knobs().update({"duplicate_rate": 2})
