"""The integration guide's webhook shape through the gateway: ``event`` names the type (an alias of
``type``), the envelope has no ``timestamp`` (the signed webhook-timestamp stands in), and Buffr's
``Idempotency-Key`` header (not signed) never decides deduplication: the signed webhook-id does."""

import httpx
import pytest

from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, payload, signed_headers
from tests import factories

pytestmark = pytest.mark.integration


@pytest.fixture()
def voucher(pg):
    return factories.voucher(pg, factories.beneficiary(pg)["id"], status="active")


def guide_body(voucher_id: str, **changes) -> dict:
    body = payload("voucher.redeemed", voucher_id, delivery_id="bfr_guide_1", amount_cents=140000, channel="agent")
    body["event"] = body.pop("type")
    del body["timestamp"]
    return {**body, **changes}


def post(url: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}{WEBHOOK_PATH}", content=raw, headers=headers, timeout=30)


def test_guide_shape_applies_once_whatever_its_idempotency_key(gateway_url, webhook_secrets, pg, voucher) -> None:
    raw = encode(guide_body(voucher["id"]))
    first = post(gateway_url, raw, signed_headers(webhook_secrets, raw, webhook_id="msg_guide_1",
                                                  idempotency_key="bfr-evt-guide-1"))
    assert first.status_code == 200, first.text
    assert first.json()["type"] == "voucher.redeemed" and first.json()["outcome"] == "applied"
    assert first.json()["status"] == "redeemed"
    # Buffr's retry with a new webhook-id (a new signed delivery), the same Idempotency-Key: the
    # header is not signed, so the state machine decides: a duplicate, nothing applied again.
    again = post(gateway_url, raw, signed_headers(webhook_secrets, raw, webhook_id="msg_guide_2",
                                                  idempotency_key="bfr-evt-guide-1"))
    assert again.status_code == 200 and again.headers.get("idempotent-replayed") != "true"
    assert again.json()["outcome"] == "duplicate" and again.json()["status"] == "redeemed"
    assert pg.execute("SELECT status FROM vouchers").fetchone()["status"] == "redeemed"
    rows = pg.execute("SELECT type, outcome FROM webhook_events ORDER BY id").fetchall()
    assert rows == [{"type": "voucher.redeemed", "outcome": "applied"},
                    {"type": "voucher.redeemed", "outcome": "duplicate"}]
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'webhook'") == 1


@pytest.mark.parametrize("body_change", [
    {"type": "voucher.expired"},          # type and event disagree
    {"event": ""},                        # empty type
])
def test_ambiguous_or_empty_type_is_422_and_changes_nothing(gateway_url, webhook_secrets, pg, voucher,
                                                            body_change) -> None:
    raw = encode(guide_body(voucher["id"], **body_change))
    r = post(gateway_url, raw, signed_headers(webhook_secrets, raw))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert factories.count(pg, "SELECT count(*) FROM webhook_events") == 0
    assert pg.execute("SELECT status FROM vouchers").fetchone()["status"] == "active"


def test_neither_type_nor_event_is_422(gateway_url, webhook_secrets, pg, voucher) -> None:
    body = guide_body(voucher["id"])
    del body["event"]
    raw = encode(body)
    r = post(gateway_url, raw, signed_headers(webhook_secrets, raw))
    assert r.status_code == 422, r.text
    assert factories.count(pg, "SELECT count(*) FROM webhook_events") == 0
