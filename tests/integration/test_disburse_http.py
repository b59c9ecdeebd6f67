"""Vouchers over HTTP: local gateway → authorizer → disburse function → PostgreSQL, moto, Buffr simulator.
(Sending is the cycle runs' job: tests/integration/test_cycle_runs.py, test_one_door.py.)"""

import json
import uuid

import httpx
import pytest

from tests import factories

pytestmark = pytest.mark.integration

ROUTES = [("POST", "/api/v1/vouchers"), ("GET", "/api/v1/vouchers/{v}"),
          ("POST", "/api/v1/cycles/old_age/2026-11/disbursement"),
          ("POST", "/api/v1/cycles/old_age/2026-11/disbursement/supplementary")]


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


def test_issue_then_read(gateway_url, api_keys, pg, sim) -> None:
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

    view = httpx.get(f"{gateway_url}/api/v1/vouchers/{voucher['voucher_id']}",
                     headers={"x-api-key": api_keys["operator"]}, timeout=30)
    assert view.status_code == 200
    body = view.json()
    assert body["status"] == "issued" and body["delivery_id"] is None
    assert [(h["from_status"], h["to_status"], h["source"]) for h in body["history"]] == [
        (None, "issued", "operator")]
    assert b["id_number"] not in view.text
    assert sim.stats()["calls"] == {}  # issuing never sends


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
