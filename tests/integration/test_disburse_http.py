"""Disbursement over HTTP: local gateway → authorizer → disburse function → PostgreSQL, moto, Buffr simulator."""

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import factories

pytestmark = pytest.mark.integration

ROUTES = [("POST", "/api/v1/vouchers"), ("POST", "/api/v1/vouchers/{v}/disburse"),
          ("POST", "/api/v1/disbursements"), ("GET", "/api/v1/vouchers/{v}")]


def _issue_body(beneficiary_id: str, **overrides) -> dict:
    return {"beneficiary_id": beneficiary_id, "amount_cents": 140000, "currency": "NAD", "programme": "old_age",
            "cycle": "2026-11", "expires_at": "2030-01-31T23:59:59+02:00", **overrides}


def _post(url: str, key: str, path: str, body: object = None, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
    h = {"content-type": "application/json", "x-api-key": key, **(headers or {})}
    return httpx.post(f"{url}{path}", headers=h, content=content, timeout=60)


def _db_state(pg) -> tuple:
    return tuple(factories.count(pg, f"SELECT count(*) FROM {t}") for t in ("vouchers", "voucher_events",
                                                                           "beneficiaries"))


def test_issue_then_disburse_then_read(gateway_url, api_keys, pg, sim) -> None:
    b = factories.beneficiary(pg)
    key = f"issue-{uuid.uuid4()}"
    first = _post(gateway_url, api_keys["operator"], "/api/v1/vouchers", _issue_body(b["id"]),
                  {"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    voucher = first.json()
    assert voucher["status"] == "issued" and voucher["amount_cents"] == 140000
    again = _post(gateway_url, api_keys["operator"], "/api/v1/vouchers", _issue_body(b["id"]),
                  {"idempotency-key": key})
    assert again.status_code == 201 and again.json() == voucher
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers

    sent = _post(gateway_url, api_keys["operator"], f"/api/v1/vouchers/{voucher['voucher_id']}/disburse")
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "active" and sent.json()["delivery_id"].startswith("dlv_")
    replay = _post(gateway_url, api_keys["operator"], f"/api/v1/vouchers/{voucher['voucher_id']}/disburse",
                   headers={"Idempotency-Key": "whatever-the-caller-sends"})
    assert replay.status_code == 200 and replay.json() == sent.json()
    assert replay.headers.get("Idempotent-Replayed") == "true"

    view = httpx.get(f"{gateway_url}/api/v1/vouchers/{voucher['voucher_id']}",
                     headers={"x-api-key": api_keys["operator"]}, timeout=30)
    assert view.status_code == 200
    body = view.json()
    assert body["status"] == "active" and body["delivery_id"] == sent.json()["delivery_id"]
    assert [(h["from_status"], h["to_status"], h["source"]) for h in body["history"]] == [
        (None, "issued", "operator"), ("issued", "pending", "disburse"), ("pending", "active", "disburse")]
    assert b["id_number"] not in view.text
    assert sim.stats(detail=True)["credits_per_voucher"] == {voucher["voucher_id"]: 1}


def test_issue_rejections_change_nothing(gateway_url, api_keys, pg) -> None:
    active = factories.beneficiary(pg)
    suspended = factories.beneficiary(pg, status="suspended")
    existing = factories.voucher(pg, active["id"], cycle="2026-10")
    before = _db_state(pg)
    op = api_keys["operator"]

    def issue(body, key=None):
        return _post(gateway_url, op, "/api/v1/vouchers", body, {"Idempotency-Key": key or str(uuid.uuid4())})

    missing_key = _post(gateway_url, op, "/api/v1/vouchers", _issue_body(active["id"], cycle="2026-12"))
    assert missing_key.status_code == 400 and "Idempotency-Key" in missing_key.json()["detail"]
    unknown = issue(_issue_body(str(uuid.uuid4())))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["location"] == "body.beneficiary_id"
    inactive = issue(_issue_body(suspended["id"]))
    assert inactive.status_code == 422 and "suspended" in inactive.json()["detail"]
    too_much = issue(_issue_body(active["id"], amount_cents=300001))
    assert too_much.status_code == 422 and too_much.json()["errors"][0]["location"] == "body.amount_cents"
    for bad in ({"amount_cents": 0}, {"amount_cents": 10.5}, {"amount_cents": "100"}, {"currency": "USD"},
                {"cycle": "2026-13"}, {"expires_at": "2020-01-01T00:00:00Z"}, {"expires_at": "2030-01-01T00:00:00"},
                {"programme": "nope"}, {"surprise": 1}):
        reply = issue(_issue_body(active["id"], **bad))
        assert reply.status_code == 422, (bad, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
    assert issue("{not json").status_code == 400
    duplicate = issue(_issue_body(active["id"], cycle="2026-10"))
    assert duplicate.status_code == 409 and duplicate.json()["voucher_id"] == existing["id"]
    assert existing["id"] in duplicate.json()["detail"]
    assert _db_state(pg) == before

    key = str(uuid.uuid4())
    assert issue(_issue_body(active["id"], cycle="2026-12"), key).status_code == 201
    reused = issue(_issue_body(active["id"], cycle="2026-12", amount_cents=100), key)
    assert reused.status_code == 422 and "different" in reused.json()["detail"]
    assert factories.count(pg, "SELECT count(*) FROM vouchers") == before[0] + 1


def test_an_amount_beyond_any_column_is_a_422_not_a_500(gateway_url, api_keys, pg) -> None:
    active = factories.beneficiary(pg)
    before = _db_state(pg)
    for amount in (398612495850299654144, 2**63, 2**53):
        reply = _post(gateway_url, api_keys["operator"], "/api/v1/vouchers", _issue_body(active["id"], amount_cents=amount),
                      {"Idempotency-Key": str(uuid.uuid4())})
        assert reply.status_code == 422, (amount, reply.text)
        assert reply.json()["errors"][0]["location"] == "body.amount_cents"
    assert _db_state(pg) == before


def test_disburse_rejections(gateway_url, api_keys, pg, sim) -> None:
    b = factories.beneficiary(pg)
    done = factories.voucher(pg, b["id"], status="active")
    before = _db_state(pg)
    op = api_keys["operator"]
    past = _post(gateway_url, op, f"/api/v1/vouchers/{done['id']}/disburse")
    assert past.status_code == 409 and past.json()["status"] == 409 and past.json()["voucher_status"] == "active"
    assert _post(gateway_url, op, f"/api/v1/vouchers/{uuid.uuid4()}/disburse").status_code == 404
    assert _post(gateway_url, op, "/api/v1/vouchers/not-a-uuid/disburse").status_code == 422
    for bad in ({}, {"voucher_ids": []}, {"voucher_ids": ["x"]}, {"programme": "old_age"},
                {"voucher_ids": [str(uuid.uuid4())] * 1001},
                {"voucher_ids": [done["id"]], "programme": "old_age", "cycle": "2026-11"},
                {"programme": "old_age", "cycle": "2026-11", "limit": 0}):
        assert _post(gateway_url, op, "/api/v1/disbursements", bad).status_code == 422, bad
    missing = httpx.get(f"{gateway_url}/api/v1/vouchers/{uuid.uuid4()}", headers={"x-api-key": op}, timeout=30)
    assert missing.status_code == 404
    assert _db_state(pg) == before
    assert sim.stats()["calls"] == {}


def test_buffr_key_is_refused_on_every_disburse_route(gateway_url, api_keys, pg) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"])
    for method, path in ROUTES:
        reply = httpx.request(method, f"{gateway_url}{path.format(v=v['id'])}", timeout=30,
                              headers={"x-api-key": api_keys["buffr"], "content-type": "application/json",
                                       "Idempotency-Key": str(uuid.uuid4())},
                              content=json.dumps({"voucher_ids": [v["id"]]}) if method == "POST" else None)
        assert reply.status_code == 403, (method, path, reply.text)
    assert factories.count(pg, "SELECT count(*) FROM voucher_events") == 1


def test_batch_by_programme_cycle_and_resume(gateway_url, api_keys, pg, sim) -> None:
    vouchers = [factories.voucher(pg, factories.beneficiary(pg)["id"], cycle="2026-09") for _ in range(30)]
    op = api_keys["operator"]
    first = _post(gateway_url, op, "/api/v1/disbursements", {"programme": "old_age", "cycle": "2026-09",
                                                             "limit": 20})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["requested"], body["succeeded"], body["remaining"]) == (20, 20, 10)
    second = _post(gateway_url, op, "/api/v1/disbursements", {"programme": "old_age", "cycle": "2026-09"}).json()
    assert (second["requested"], second["succeeded"], second["remaining"]) == (10, 10, 0)
    by_ids = _post(gateway_url, op, "/api/v1/disbursements", {"voucher_ids": [v["id"] for v in vouchers[:3]]})
    assert [r["outcome"] for r in by_ids.json()["results"]] == ["skipped"] * 3
    stats = sim.stats(detail=True)
    assert stats["credits_per_voucher"] == {v["id"]: 1 for v in vouchers}
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE status = 'active' AND cycle = '2026-09'") == 30


def test_hundred_concurrent_disburse_calls_through_the_gateway(gateway_url, api_keys, pg, sim) -> None:
    sim.configure(latency_ms=300)
    v = factories.voucher(pg, factories.beneficiary(pg)["id"])
    path = f"/api/v1/vouchers/{v['id']}/disburse"
    with ThreadPoolExecutor(100) as pool:
        replies = list(pool.map(lambda _: _post(gateway_url, api_keys["operator"], path), range(100)))
    statuses = [r.status_code for r in replies]
    fresh = [r for r in replies if r.status_code == 200 and "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1, statuses
    assert all(r.status_code == 409 or (r.status_code == 200 and r.json() == fresh[0].json()) for r in replies), [
        (r.status_code, r.text[:200]) for r in replies if r.status_code not in (200, 409)]
    assert sim.stats(detail=True)["credits_per_voucher"] == {v["id"]: 1}
    transitions = pg.execute("SELECT from_status, to_status FROM voucher_events WHERE voucher_id = %s ORDER BY id",
                             (v["id"],)).fetchall()
    assert [(t["from_status"], t["to_status"]) for t in transitions] == [
        (None, "issued"), ("issued", "pending"), ("pending", "active")]
