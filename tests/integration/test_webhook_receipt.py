"""Webhook receipt in-process (warm handler, moto DynamoDB, real PostgreSQL): outcomes and exact state."""

import json
import time
import uuid

import pytest

from smartpay import signing
from smartpay_tools.buffr_sim.webhook_sender import payload
from tests import factories

pytestmark = pytest.mark.integration


@pytest.fixture()
def voucher(pg):
    b = factories.beneficiary(pg)
    return factories.voucher(pg, b["id"], status="pending")


def status_of(pg, voucher_id: str) -> str:
    return pg.execute("SELECT status FROM vouchers WHERE id = %s", (voucher_id,)).fetchone()["status"]


def audit_rows(pg, voucher_id: str) -> int:
    return factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s AND source = 'webhook'",
                           voucher_id)


def outcomes(pg) -> list[tuple[str, str]]:
    return [(r["webhook_id"], r["outcome"]) for r in
            pg.execute("SELECT webhook_id, outcome FROM webhook_events ORDER BY id").fetchall()]


def test_activated_then_redeemed_applies_each_once(webhook, pg, voucher) -> None:
    v = voucher["id"]
    r = webhook.deliver(payload("voucher.activated", v, delivery_id="bfr_1"), webhook_id="msg_a1")
    assert (r.status, r.body["outcome"], r.body["status"], r.replayed) == (200, "applied", "active", False)
    r = webhook.deliver(payload("voucher.redeemed", v, delivery_id="bfr_1", amount_cents=140000,
                                channel="wallet"), webhook_id="msg_r1")
    assert (r.status, r.body["outcome"], r.body["status"]) == (200, "applied", "redeemed")
    row = pg.execute("SELECT status, buffr_delivery_id, review_reason FROM vouchers WHERE id = %s", (v,)).fetchone()
    assert row == {"status": "redeemed", "buffr_delivery_id": "bfr_1", "review_reason": None}
    assert audit_rows(pg, v) == 2
    assert outcomes(pg) == [("msg_a1", "applied"), ("msg_r1", "applied")]
    detail = pg.execute("SELECT detail, reference FROM voucher_events WHERE to_status = 'redeemed'").fetchone()
    assert detail["reference"] == "msg_r1"
    assert detail["detail"]["amount_cents"] == 140000 and detail["detail"]["channel"] == "wallet"


def test_same_delivery_twice_is_replayed_from_the_idempotency_store(webhook, pg, voucher) -> None:
    body = payload("voucher.activated", voucher["id"], delivery_id="bfr_2")
    first = webhook.deliver(body, webhook_id="msg_dup")
    second = webhook.deliver(body, webhook_id="msg_dup")  # Buffr's retry: same id and body, new timestamp
    assert first.body == second.body and (first.replayed, second.replayed) == (False, True)
    assert second.status == 200
    assert audit_rows(pg, voucher["id"]) == 1 and outcomes(pg) == [("msg_dup", "applied")]


def test_a_replay_with_a_chosen_idempotency_key_is_the_same_delivery(webhook, pg, voucher) -> None:
    body = payload("voucher.activated", voucher["id"], delivery_id="bfr_3")
    first = webhook.deliver(body, webhook_id="msg_k1", headers={"Idempotency-Key": "key-1"})
    # a captured delivery replayed with keys of the replayer's choosing (the header is not signed)
    for chosen in ({"Idempotency-Key": "chosen-1"}, {"X-Idempotency-Key": "chosen-2"}, {}):
        again = webhook.deliver(body, webhook_id="msg_k1", headers=chosen)
        assert again.replayed and again.body == first.body
    assert not first.replayed and first.body["outcome"] == "applied"
    assert audit_rows(pg, voucher["id"]) == 1 and outcomes(pg) == [("msg_k1", "applied")]
    assert pg.execute("SELECT idempotency_key FROM webhook_events").fetchone()["idempotency_key"] == "key-1"


def test_same_key_other_payload_is_422_and_changes_nothing(webhook, pg, voucher) -> None:
    webhook.deliver(payload("voucher.activated", voucher["id"], delivery_id="bfr_4"), webhook_id="msg_same")
    r = webhook.deliver(payload("voucher.expired", voucher["id"], delivery_id="bfr_4"), webhook_id="msg_same")
    assert r.status == 422 and r.body["title"] == "Idempotency key reused"
    assert status_of(pg, voucher["id"]) == "active" and len(outcomes(pg)) == 1


def test_backwards_event_is_stale_and_changes_nothing(webhook, pg, voucher) -> None:
    v = voucher["id"]
    webhook.deliver(payload("voucher.redeemed", v, delivery_id="b", amount_cents=140000, channel="pos"),
                    webhook_id="msg_red")
    r = webhook.deliver(payload("voucher.activated", v, delivery_id="b"), webhook_id="msg_late")
    assert (r.status, r.body["outcome"], r.body["status"]) == (200, "stale", "redeemed")
    assert status_of(pg, v) == "redeemed" and audit_rows(pg, v) == 1
    assert outcomes(pg) == [("msg_red", "applied"), ("msg_late", "stale")]


def test_redeemed_after_local_expiry_wins_and_is_flagged(webhook, pg) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="expired")["id"]
    r = webhook.deliver(payload("voucher.redeemed", v, delivery_id="b", amount_cents=140000, channel="wallet"))
    assert r.status == 200 and r.body["outcome"] == "applied" and r.body["review_reason"]
    row = pg.execute("SELECT status, review_reason FROM vouchers WHERE id = %s", (v,)).fetchone()
    assert row["status"] == "redeemed" and "expired" in row["review_reason"]


def test_unknown_voucher_is_404_recorded_rejected_once(webhook, pg) -> None:
    ghost = str(uuid.uuid4())
    body = payload("voucher.activated", ghost, delivery_id="b")
    for _ in range(3):  # Buffr retries: each is processed again (404s are not cached), logged once
        r = webhook.deliver(body, webhook_id="msg_ghost")
        assert r.status == 404 and r.body["outcome"] == "rejected" and not r.replayed
    rows = pg.execute("SELECT outcome, voucher_id, reason FROM webhook_events").fetchall()
    assert rows == [{"outcome": "rejected", "voucher_id": uuid.UUID(ghost), "reason": "unknown voucher"}]


def test_unknown_type_is_200_ignored(webhook, pg, voucher) -> None:
    r = webhook.deliver({"type": "voucher.reminder_sent", "timestamp": "2026-11-02T08:00:00Z",
                         "data": {"voucher_id": voucher["id"], "anything": [1, 2]}})
    assert (r.status, r.body["outcome"]) == (200, "ignored")
    assert status_of(pg, voucher["id"]) == "pending" and outcomes(pg)[0][1] == "ignored"


@pytest.mark.parametrize("kind, start, final", [
    ("voucher.delivered", "pending", "active"), ("voucher.expired", "active", "expired"),
    ("voucher.cancelled", "active", "cancelled"), ("voucher.failed", "pending", "failed"),
])
def test_each_event_type_applies(webhook, pg, kind, start, final) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status=start)["id"]
    extra = {"reason": "wallet closed"} if kind == "voucher.failed" else {}
    r = webhook.deliver(payload(kind, v, delivery_id="bfr_x", **extra))
    assert (r.status, r.body["outcome"], status_of(pg, v)) == (200, "applied", final)
    if kind == "voucher.failed":
        assert pg.execute("SELECT failure_reason FROM vouchers WHERE id = %s", (v,)).fetchone() == {
            "failure_reason": "wallet closed"}


def test_redeemed_amount_mismatch_applies_with_a_reason(webhook, pg, voucher) -> None:
    v = voucher["id"]
    r = webhook.deliver(payload("voucher.redeemed", v, delivery_id="b", amount_cents=1, channel="wallet"))
    assert r.body["outcome"] == "applied"
    reason = "amount mismatch: Buffr reported 1, voucher is 140000"
    assert pg.execute("SELECT reason FROM webhook_events").fetchone()["reason"] == reason
    # flagged for review on the voucher, and the audit row (written by the database) says so
    assert pg.execute("SELECT status, review_reason FROM vouchers WHERE id = %s", (v,)).fetchone() == {
        "status": "redeemed", "review_reason": reason}
    last = pg.execute("SELECT from_status, to_status, source, detail FROM voucher_events WHERE voucher_id = %s "
                      "ORDER BY id DESC LIMIT 1", (v,)).fetchone()
    assert (last["from_status"], last["to_status"], last["source"]) == ("pending", "redeemed", "webhook")
    assert last["detail"]["review_reason"] == reason and last["detail"]["amount_cents"] == 1


def _unchanged(pg, voucher_id: str) -> None:
    assert status_of(pg, voucher_id) == "pending"
    assert factories.count(pg, "SELECT count(*) FROM webhook_events") == 0
    assert audit_rows(pg, voucher_id) == 0


def _tamper(webhook, body: bytes, **changes: str) -> dict[str, str]:
    headers = signing.sign_headers(webhook.secrets, body)
    headers.update(changes)
    return headers


@pytest.mark.parametrize("case", ["body", "timestamp", "id", "wrong_secret", "old", "future", "missing",
                                  "garbage_signature", "fractional_timestamp", "unsigned"])
def test_bad_signature_is_401_and_nothing_is_stored(webhook, pg, voucher, case) -> None:
    body = json.dumps(payload("voucher.activated", voucher["id"], delivery_id="b")).encode()
    now = int(time.time())
    headers: dict[str, str]
    if case == "body":
        headers, body = _tamper(webhook, body), body.replace(b"activated", b"cancelled")
    elif case == "timestamp":
        headers = _tamper(webhook, body, **{"webhook-timestamp": str(now + 1)})
        headers["webhook-signature"] = signing.signature(webhook.secrets, headers["webhook-id"], now, body)
    elif case == "id":
        headers = _tamper(webhook, body, **{"webhook-id": "msg_other"})
    elif case == "wrong_secret":
        headers = signing.sign_headers(signing.new_secret(), body)
    elif case == "old":
        headers = signing.sign_headers(webhook.secrets, body, timestamp=now - 301)
    elif case == "future":
        headers = signing.sign_headers(webhook.secrets, body, timestamp=now + 310)
    elif case == "missing":
        headers = {k: v for k, v in _tamper(webhook, body).items() if k != "webhook-signature"}
    elif case == "garbage_signature":
        headers = _tamper(webhook, body, **{"webhook-signature": "v1 v1,%%% ,,, v2,abc"})
    elif case == "fractional_timestamp":
        headers = signing.sign_headers(webhook.secrets, body, timestamp=now)
        headers["webhook-timestamp"] = f"{now}.9"
    else:
        headers = {}
    r = webhook.deliver(body, signed=False, headers=headers)
    assert r.status == 401 and r.body["title"] == "Invalid webhook signature"
    _unchanged(pg, voucher["id"])


def test_old_and_new_secret_both_accepted_during_rotation(webhook, pg, voucher, webhook_secrets) -> None:
    current, old = webhook_secrets.split()
    v = voucher["id"]
    assert webhook.deliver(payload("voucher.activated", v, delivery_id="b"), secrets=old).status == 200
    r = webhook.deliver(payload("voucher.redeemed", v, delivery_id="b", amount_cents=140000, channel="w"),
                        secrets=current)
    assert r.status == 200 and status_of(pg, v) == "redeemed"


@pytest.mark.parametrize("body, status, location", [
    (b"not json", 400, "body"),
    (b'{"type": "voucher.activated", "timestamp": NaN, "data": {}}', 400, "body"),
    (b"[1, 2]", 422, "body"),
    ({"timestamp": "2026-11-02T08:00:00Z", "data": {}}, 422, "body.type"),
    ({"type": "voucher.activated", "timestamp": "yesterday", "data": {}}, 422, "body.timestamp"),
    ({"type": "voucher.activated", "timestamp": "2026-11-02T08:00:00", "data": {}}, 422, "body.timestamp"),
    ({"type": "voucher.activated", "timestamp": "2026-11-02T08:00:00Z", "data": []}, 422, "body.data"),
    ({"type": "voucher.activated", "timestamp": "2026-11-02T08:00:00Z",
      "data": {"voucher_id": "nope", "delivery_id": "b", "occurred_at": "2026-11-02T08:00:00Z"}},
     422, "body.data.voucher_id"),
    ({"type": "voucher.activated", "timestamp": "2026-11-02T08:00:00Z",
      "data": {"voucher_id": str(uuid.uuid4()), "occurred_at": "2026-11-02T08:00:00Z"}},
     422, "body.data.delivery_id"),
    ({"type": "voucher.redeemed", "timestamp": "2026-11-02T08:00:00Z",
      "data": {"voucher_id": str(uuid.uuid4()), "delivery_id": "b", "occurred_at": "2026-11-02T08:00:00Z",
               "amount_cents": 1400.5, "channel": "wallet"}}, 422, "body.data.amount_cents"),
    ({"type": "voucher.redeemed", "timestamp": "2026-11-02T08:00:00Z",
      "data": {"voucher_id": str(uuid.uuid4()), "delivery_id": "b", "occurred_at": "2026-11-02T08:00:00Z",
               "amount_cents": 100}}, 422, "body.data.channel"),
    ({"type": "voucher.reminder", "timestamp": "2026-11-02T08:00:00Z", "data": {"note": "a\u0000b"}},
     422, "body.data.note"),
    (b'{"type": "x", "timestamp": "2026-11-02T08:00:00Z", "data": {"n": 1e400}}', 422, "body.data.n"),
    (b'{"type": "x", "timestamp": "2026-11-02T08:00:00Z", "data": {"s": "\\ud800"}}', 422, "body.data.s"),
    (b"[" * 100_000, 400, "body"),
    ({"type": "x", "timestamp": "2026-11-02T08:00:00Z", "data": {"pad": "x" * 300_000}}, 413, None),
])
def test_bad_input_is_a_4xx_problem_and_changes_nothing(webhook, pg, voucher, body, status, location) -> None:
    r = webhook.deliver(body)
    assert r.status == status, r.body
    assert r.body["status"] == status and r.body["detail"]
    if location:
        assert location in [e["location"] for e in r.body.get("errors", [])], r.body
    _unchanged(pg, voucher["id"])
