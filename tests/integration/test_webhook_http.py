"""Webhook receipt over HTTP: local gateway (Auth NONE) → webhook function workers → moto + PostgreSQL."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from smartpay import signing
from smartpay_tools.buffr_sim.webhook_sender import WEBHOOK_PATH, encode, payload, signed_headers
from tests import factories

pytestmark = pytest.mark.integration


@pytest.fixture()
def voucher(pg):
    return factories.voucher(pg, factories.beneficiary(pg)["id"], status="pending")


def post(url: str, raw: bytes, headers: dict[str, str], client: httpx.Client | None = None) -> httpx.Response:
    return (client or httpx).post(f"{url}{WEBHOOK_PATH}", content=raw, headers=headers, timeout=30)


def test_signed_delivery_needs_no_api_key_and_applies_once(gateway_url, webhook_secrets, pg, voucher) -> None:
    raw = encode(payload("voucher.activated", voucher["id"], delivery_id="bfr_h1"))
    first = post(gateway_url, raw, signed_headers(webhook_secrets, raw, webhook_id="msg_http_1"))
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "applied" and "idempotent-replayed" not in first.headers
    again = post(gateway_url, raw, signed_headers(webhook_secrets, raw, webhook_id="msg_http_1"))
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'webhook'") == 1


@pytest.mark.parametrize("case", ["forged", "old", "future"])
def test_bad_or_stale_signature_is_401_over_http(gateway_url, webhook_secrets, pg, voucher, case) -> None:
    raw = encode(payload("voucher.activated", voucher["id"], delivery_id="b"))
    now = int(time.time())
    secrets = signing.new_secret() if case == "forged" else webhook_secrets
    # Far outside the ±TOLERANCE_SECONDS window (the edges are unit-tested with a fixed clock in
    # test_signing.py): a slow machine can only make "old" older; "future" stays out for an hour.
    stamp = {"forged": now, "old": now - signing.TOLERANCE_SECONDS - 1,
             "future": now + signing.TOLERANCE_SECONDS + 3600}[case]
    r = post(gateway_url, raw, signed_headers(secrets, raw, timestamp=stamp))
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert factories.count(pg, "SELECT count(*) FROM webhook_events") == 0
    assert pg.execute("SELECT status FROM vouchers").fetchone()["status"] == "pending"


def test_body_over_256_kb_is_413(gateway_url, webhook_secrets, pg, voucher) -> None:
    raw = encode({"type": "x", "timestamp": "2026-11-02T08:00:00Z", "data": {"pad": "x" * (256 * 1024)}})
    r = post(gateway_url, raw, signed_headers(webhook_secrets, raw))
    assert r.status_code == 413 and r.json()["status"] == 413
    assert factories.count(pg, "SELECT count(*) FROM webhook_events") == 0


def test_1000_deliveries_of_one_event_50_at_a_time_change_state_once(gateway_url, webhook_secrets, pg,
                                                                      voucher) -> None:
    raw = encode(payload("voucher.activated", voucher["id"], delivery_id="bfr_storm"))

    def deliver(client: httpx.Client) -> tuple[int, bool]:
        r = post(gateway_url, raw, signed_headers(webhook_secrets, raw, webhook_id="msg_storm"), client)
        return r.status_code, r.headers.get("idempotent-replayed") == "true"

    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with httpx.Client(limits=limits, timeout=60) as client, ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: deliver(client), range(1000)))
    statuses = {status for status, _ in results}
    assert statuses <= {200, 409}, statuses  # 409 = in progress elsewhere, retry later; never a 5xx
    assert sum(1 for status, replayed in results if status == 200 and not replayed) == 1
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (voucher["id"],)).fetchone()["status"] == "active"
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE source = 'webhook'") == 1
    assert factories.count(pg, "SELECT count(*) FROM webhook_events WHERE outcome = 'applied'") == 1
    assert factories.count(pg, "SELECT count(*) FROM webhook_events WHERE outcome <> 'applied'") == 0


def test_invoke_saved_proxy_event_with_sign(pg_url) -> None:
    import subprocess
    import sys

    from smartpay_tools import PROJECT_ROOT

    out = subprocess.run(
        [sys.executable, "-m", "smartpay_tools", "--database-url", pg_url, "invoke", "webhook", "--sign",
         "--no-migrate", "--event", str(PROJECT_ROOT / "events/webhook/buffr.json")],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{"):])
    # The saved event's voucher is not in this database: a verified delivery, answered 404 and logged.
    assert result["statusCode"] == 404, result
    assert json.loads(result["body"])["outcome"] == "rejected"
