"""The Buffr simulator's webhooks, end to end over real HTTP on loopback.

disburse function (sending a run's vouchers) → simulator (credit) → simulator's sender → gateway →
webhook function → PostgreSQL. Every figure asserted is read from PostgreSQL and the simulator.
"""

import json
import uuid

import httpx
import pytest

from tests import factories

pytestmark = pytest.mark.integration

FINAL = ("voucher.redeemed", "voucher.expired")


def _cycle(pg, n: int, cycle: str) -> list[str]:
    """``n`` issued vouchers of a run under way (the only ones the disburse function sends)."""
    ids = [factories.voucher(pg, factories.beneficiary(pg)["id"], cycle=cycle)["id"] for _ in range(n)]
    factories.in_run(pg, ids, cycle=cycle)
    return ids


def _send(local_stack, ids: list[str]) -> dict:
    """The disburse function's send step on these vouchers (its direct event, as reconciliation's
    re-send invokes it; a run's chunk goes through the same step)."""
    reply = local_stack.invoke("DisburseFunction", {"run_id": str(uuid.uuid4()), "voucher_ids": ids})
    assert [r["outcome"] for r in reply["results"]] == ["active"] * len(ids), reply
    return reply


def _run_cycle(local_stack, pg, sim, hooks, n: int, cycle: str, **knobs) -> tuple[list[str], dict]:
    """Issue ``n`` vouchers of a run, set the knobs, send them, wait for the webhooks."""
    ids = _cycle(pg, n, cycle)
    hooks(**knobs)
    _send(local_stack, ids)
    assert sim.flush_webhooks(120)
    return ids, sim.stats()


def _statuses(pg, cycle: str) -> dict[str, str]:
    rows = pg.execute("SELECT id::text AS id, status FROM vouchers WHERE cycle = %s", (cycle,)).fetchall()
    return {r["id"]: r["status"] for r in rows}


def _outcomes(pg) -> dict[tuple[str, str], int]:
    rows = pg.execute("SELECT type, outcome, count(*) AS n FROM webhook_events GROUP BY 1, 2").fetchall()
    return {(r["type"], r["outcome"]): r["n"] for r in rows}


@pytest.fixture()
def hooks(sim, gateway_url, fresh_idempotency):
    """The simulator with webhooks on (the sim fixture's reset switches them off again)."""
    def configure(**knobs):
        return sim.configure_webhooks(enabled=True, max_attempts=8, **knobs)
    return configure


def test_duplicates_and_reordering_end_at_the_furthest_status(local_stack, gateway_url, api_keys, pg, sim, hooks) -> None:
    n, cycle = 40, "2026-03"
    ids, stats = _run_cycle(local_stack, pg, sim, hooks, n, cycle, duplicate_rate=0.5,
                            reorder_rate=0.5, drop_rate=0.0, settle_rate=1.0, redeem_rate=0.5)
    sent = stats["webhooks"]
    by_type = sent["by_type"]
    assert stats["credits"] == n and stats["double_credited"] == {}
    assert sent["failed"] == 0 and sent["dropped"] == 0 and sent["duplicated"] > 0 and sent["reordered"] > 0
    assert set(sent["statuses"]) == {"200"}
    assert by_type["planned"]["voucher.activated"] == n
    assert sum(by_type["planned"].get(t, 0) for t in FINAL) == n
    for type_, planned in by_type["planned"].items():  # every planned delivery and every copy answered
        assert by_type["delivered"][type_] == planned + by_type["duplicated"].get(type_, 0)
    assert by_type["superseded"] == {} and by_type["discarded"] == {}

    # Ketchup ends where Buffr is, at the furthest status, and agrees with Buffr's status endpoint
    final = _statuses(pg, cycle)
    assert set(final.values()) <= {"redeemed", "expired"}
    assert stats["statuses"] == {s: list(final.values()).count(s) for s in set(final.values())}
    for voucher_id in ids[:10]:
        assert sim.voucher(voucher_id)["status"] == final[voucher_id]
    assert list(final.values()).count("redeemed") == by_type["planned"].get("voucher.redeemed", 0)

    # one webhook_events row per distinct delivery (copies are answered by the idempotency store)
    assert factories.count(pg, "SELECT count(*) FROM webhook_events") == 2 * n
    assert factories.count(pg, "SELECT count(DISTINCT webhook_id) FROM webhook_events") == 2 * n
    outcomes = _outcomes(pg)
    assert sum(outcomes.get((t, "applied"), 0) for t in FINAL) == n  # every outcome is a real change
    # a reordered activation arrives after the outcome: stale; in order it is applied (the voucher was still
    # pending) or a duplicate (the disburse reply got there first)
    assert outcomes.get(("voucher.activated", "stale"), 0) == sent["reordered"]
    assert outcomes.get(("voucher.activated", "applied"), 0) + outcomes.get(
        ("voucher.activated", "duplicate"), 0) == n - sent["reordered"]
    assert sum(outcomes.values()) == 2 * n

    # audit rows only for real changes: each (voucher, status) once, issued → pending → … → final
    events = factories.count(pg, "SELECT count(*) FROM voucher_events")
    assert events == factories.count(pg, "SELECT count(DISTINCT (voucher_id, to_status)) FROM voucher_events")
    for status, expected in (("issued", n), ("pending", n)):
        assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE to_status = %s", status) == expected
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE to_status IN ('redeemed', 'expired')") == n
    active_rows = factories.count(pg, "SELECT count(*) FROM voucher_events WHERE to_status = 'active'")
    assert events == 3 * n + active_rows and active_rows <= n


def test_dropped_webhooks_leave_ketchup_behind_buffr(local_stack, gateway_url, api_keys, pg, sim, hooks) -> None:
    n, cycle = 40, "2026-04"
    ids, stats = _run_cycle(local_stack, pg, sim, hooks, n, cycle, drop_rate=0.3, duplicate_rate=0.0,
                            reorder_rate=0.0, settle_rate=1.0, redeem_rate=0.7)
    sent = stats["webhooks"]
    dropped = sent["by_type"]["dropped"]
    dropped_final = sum(dropped.get(t, 0) for t in FINAL)
    assert sent["dropped"] > 0 and dropped_final > 0 and sent["failed"] == 0
    # Buffr settled every voucher, dropped webhook or not
    assert sum(stats["statuses"].values()) == n and "active" not in stats["statuses"]

    final = _statuses(pg, cycle)
    buffr = {v: sim.voucher(v)["status"] for v in ids}
    behind = sorted(v for v in ids if final[v] != buffr[v])
    assert len(behind) == dropped_final and all(final[v] == "active" for v in behind)
    for status, type_ in (("redeemed", "voucher.redeemed"), ("expired", "voucher.expired")):
        assert list(final.values()).count(status) == stats["statuses"].get(status, 0) - dropped.get(type_, 0)
    assert factories.count(pg, "SELECT count(*) FROM webhook_events") == 2 * n - sent["dropped"]
    assert sent["by_type"]["delivered"] == {t: c - dropped.get(t, 0)
                                            for t, c in sent["by_type"]["planned"].items() if c > dropped.get(t, 0)}


def test_settle_now_with_and_without_the_webhook(local_stack, gateway_url, api_keys, pg, sim, hooks) -> None:
    cycle = "2026-05"
    # only the activation is sent; the outcome is the operator's call
    ids, _ = _run_cycle(local_stack, pg, sim, hooks, 5, cycle, settle_rate=0.0)
    assert set(_statuses(pg, cycle).values()) == {"active"}

    assert sim.settle(ids[0], "redeemed", webhook=True)["webhook"] is True
    assert sim.settle(ids[1], "expired", webhook=False)["webhook"] is False
    many = sim.settle_many([ids[2], ids[3], ids[0], "no-such-voucher"], "redeemed")
    assert many == {"settled": 2, "webhooks_queued": 0, "unknown": ["no-such-voucher"], "not_active": [ids[0]]}
    assert sim.flush_webhooks(60)

    final = _statuses(pg, cycle)
    assert [final[v] for v in ids] == ["redeemed", "active", "active", "active", "active"]
    assert [sim.voucher(v)["status"] for v in ids] == ["redeemed", "expired", "redeemed", "redeemed", "active"]
    assert sim.stats()["webhooks"]["by_type"]["delivered"] == {"voucher.activated": 5, "voucher.redeemed": 1}

    again = httpx.post(f"{sim.url}/_sim/vouchers/{ids[0]}/expire", json={}, timeout=10)
    assert again.status_code == 409 and "redeemed" in again.json()["error"]
    assert httpx.post(f"{sim.url}/_sim/vouchers/nope/redeem", json={}, timeout=10).status_code == 404


def test_config_is_validated_all_or_nothing(sim) -> None:
    before = sim.configure()

    def put(body):
        return httpx.put(f"{sim.url}/_sim/config", content=json.dumps(body), timeout=10)

    for body, word in (({"webhooks": {"drop_rate": 2}}, "drop_rate"),
                       ({"webhooks": {"enabled": "yes"}}, "enabled"),
                       ({"webhooks": {"delay_ms": -1}}, "delay_ms"),
                       ({"webhooks": {"url": "http://example.com"}}, "loopback"),
                       ({"latency_ms": 5, "webhooks": {"bogus": 1}}, "bogus"),
                       ({"error_rate": 3, "webhooks": {"drop_rate": 0.5}}, "error_rate")):
        reply = put(body)
        assert reply.status_code == 422 and word in reply.json()["error"], (body, reply.text)
    assert sim.configure() == before
    changed = sim.configure_webhooks(drop_rate=0.25, delay_ms=5)
    assert changed["drop_rate"] == 0.25 and changed["delay_ms"] == 5 and changed["url"] == before["webhooks"]["url"]
    sim.reset()
    assert sim.configure() == before  # start-time knobs back, URL kept


def test_sender_hook_sees_dropped_events_and_skips_superseded(webhook_secrets) -> None:
    from smartpay_tools.buffr_sim.webhook_sender import Knobs, WebhookSender
    from smartpay_tools.local.services import free_port

    seen: list[tuple[str, str]] = []

    def happened(voucher_id: str, type_: str) -> bool:
        seen.append((voucher_id, type_))
        return type_ != "voucher.expired"  # pretend the operator redeemed it meanwhile

    nobody = f"http://127.0.0.1:{free_port()}"  # refused at once: failures are counted, not hung on
    sender = WebhookSender(nobody, webhook_secrets, Knobs(drop_rate=1.0, redeem_rate=0.0, max_attempts=1),
                           on_event=happened)
    try:
        sender.voucher_credited("v1", "dlv_1", 100)
        assert sender.flush(10)
        assert seen == [("v1", "voucher.activated"), ("v1", "voucher.expired")]  # dropped, yet it happened
        summary = sender.stats.summary()["by_type"]
        assert summary["dropped"] == {"voucher.activated": 1, "voucher.expired": 1}
        assert summary["superseded"] == {"voucher.expired": 1} and summary["delivered"] == {}

        sender.knobs.update({"drop_rate": 0.0})
        sender.voucher_credited("v2", "dlv_2", 100)
        assert sender.flush(10)
        summary = sender.stats.summary()["by_type"]
        assert summary["failed"] == {"voucher.activated": 1} and summary["superseded"]["voucher.expired"] == 2
        with pytest.raises(ValueError, match="drop_rate"):
            sender.knobs.update({"delay_ms": 5, "drop_rate": -1})
        assert sender.knobs.delay_ms == 0  # all or nothing
    finally:
        sender.close()
    assert not any(t.is_alive() for t in sender._threads)


def test_simulator_process_stops_cleanly_with_webhooks_queued(webhook_secrets) -> None:
    from smartpay_tools.buffr_sim.process import SimulatorProcess
    from smartpay_tools.buffr_sim.state import DEFAULT_API_KEY
    from smartpay_tools.local.services import free_port

    process = SimulatorProcess(port=free_port(), webhook_url=f"http://127.0.0.1:{free_port()}",
                               webhook_secrets=webhook_secrets, knobs={"delay_ms": 10_000}).start()
    try:
        for i in range(3):
            reply = httpx.post(f"{process.url}/api/utilities/vouchers/disburse",
                               headers={"Authorization": f"Bearer {DEFAULT_API_KEY}", "Idempotency-Key": f"k{i}"},
                               json={"voucher_id": f"v{i}", "amount": 100, "beneficiary_id_number": "85010112345"},
                               timeout=10)
            assert reply.status_code == 200  # answered while its webhooks wait in the queue
        assert process.stats()["webhooks"]["planned"] == 6
    finally:
        process.stop()
    assert process.process.returncode == 0  # SIGTERM honoured: not killed


def test_failed_start_leaves_no_simulator_behind(sim) -> None:
    from smartpay_tools.buffr_sim.process import SimulatorProcess
    from smartpay_tools.local.services import free_port, port_open
    from smartpay_tools.local.stack import LocalStack

    with pytest.raises(RuntimeError, match="already in use"):
        SimulatorProcess(port=sim.port).start()  # the port is taken: refuse, never adopt a stranger
    port = free_port()
    stack = LocalStack(database_url="postgresql://nobody@127.0.0.1:1/none", simulator_port=port)
    with pytest.raises(Exception, match=r"connect|refused|failed"):
        stack.start_services()
    assert not port_open("127.0.0.1", port) and stack.buffr.process.poll() is not None
