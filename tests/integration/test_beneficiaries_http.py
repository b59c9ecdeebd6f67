"""Beneficiary lookup over HTTP: local gateway → authorizer → function → PostgreSQL."""

import json

import httpx
import pytest

from tests import factories

pytestmark = pytest.mark.integration
JSON = {"content-type": "application/json"}


@pytest.fixture()
def person(pg):
    b = factories.beneficiary(pg, first_name="Tuyeni", last_name="Haufiku", msisdn="+264811234567")
    v = factories.voucher(pg, b["id"], status="active")
    factories.voucher(pg, b["id"], cycle="2026-10", status="redeemed")
    return b, v


def _verify(url: str, key: str | None, body: object, headers: dict | None = None) -> httpx.Response:
    h = {**JSON, **({"x-api-key": key} if key else {}), **(headers or {})}
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(f"{url}/api/v1/beneficiaries/verify", headers=h, content=content, timeout=30)


def test_verify_returns_a_masked_match(gateway_url, api_keys, person) -> None:
    b, v = person
    r = _verify(gateway_url, api_keys["buffr"], {"id_number": b["id_number"], "full_name": "tuyeni  HAUFIKU",
                                                  "msisdn": "+264811234567", "voucher_id": v["id"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["match"] is True
    assert body["checks"] == {"id_number": True, "full_name": True, "msisdn": True, "voucher_id": True}
    profile = body["beneficiary"]
    assert profile["id_number"] == "*******" + b["id_number"][-4:]
    assert profile["msisdn"] == "+264*****4567" and profile["name"] == "T***** H******"
    assert profile["eligible"] is True
    assert [o["voucher_id"] for o in profile["open_vouchers"]] == [v["id"]]
    assert b["id_number"] not in r.text and "811234567" not in r.text and "Haufiku" not in r.text


@pytest.mark.parametrize("supplied", [
    {"full_name": "Someone Else"},
    {"full_name": "Tuyeni Haufiku", "msisdn": "+264811234568"},
    {"msisdn": "+264811234568"},
    {"full_name": "Tuyeni Haufiku", "voucher_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"},
])
def test_verify_with_any_wrong_field_says_only_no_match(gateway_url, api_keys, person, supplied) -> None:
    """The right ID number with one wrong field: no profile, no vouchers, not even which field failed."""
    b, v = person
    r = _verify(gateway_url, api_keys["buffr"], {"id_number": b["id_number"], **supplied})
    assert r.status_code == 200, r.text
    assert r.json() == {"match": False}
    assert v["id"] not in r.text and b["id"] not in r.text


def test_unknown_id_number_reveals_nothing(gateway_url, api_keys, pg) -> None:
    r = _verify(gateway_url, api_keys["buffr"], {"id_number": "99999999999"})
    assert r.status_code == 200
    assert r.json() == {"match": False}


def test_suspended_beneficiary_is_not_eligible(gateway_url, api_keys, pg) -> None:
    b = factories.beneficiary(pg, status="suspended")
    r = _verify(gateway_url, api_keys["buffr"], {"id_number": b["id_number"]})
    assert r.json()["beneficiary"]["eligible"] is False and r.json()["beneficiary"]["status"] == "suspended"


def test_get_by_id_masks_the_profile(gateway_url, api_keys, person) -> None:
    b, _v = person
    r = httpx.get(f"{gateway_url}/api/v1/beneficiaries/{b['id']}", headers={"x-api-key": api_keys["buffr"]})
    assert r.status_code == 200
    assert r.json()["id_number"].endswith(b["id_number"][-4:]) and b["id_number"] not in r.text
    assert r.json()["open_vouchers"][0]["amount_cents"] == 140000


def test_no_key_or_wrong_key_is_401(gateway_url, person) -> None:
    b, _ = person
    assert _verify(gateway_url, None, {"id_number": b["id_number"]}).status_code == 401
    assert _verify(gateway_url, "not-a-key", {"id_number": b["id_number"]}).status_code == 401


def test_key_without_scope_is_403(gateway_url, api_keys, person) -> None:
    b, _ = person
    r = _verify(gateway_url, api_keys["payments"], {"id_number": b["id_number"]})
    assert r.status_code == 403


@pytest.mark.parametrize("body, status, location", [
    ("not json", 400, "body"),
    (b"\xff\xfez", 400, "body"),
    ({"full_name": "A B"}, 422, "body.id_number"),
    ({"id_number": "1234567890"}, 422, "body.id_number"),
    ({"id_number": "12345678901x"}, 422, "body.id_number"),
    ({"id_number": 12345678901}, 422, "body.id_number"),
    ({"id_number": "12345678901", "surname": "X"}, 422, "body.surname"),
    ({"id_number": "12345678901", "msisdn": "0811234567"}, 422, "body.msisdn"),
    ({"id_number": "12345678901", "voucher_id": "nope"}, 422, "body.voucher_id"),
    ([1, 2], 422, "body"),
    ({"id_number": "1" * 11, "full_name": "x" * 20000}, 413, None),
])
def test_bad_input_is_a_4xx_problem(gateway_url, api_keys, pg, body, status, location) -> None:
    r = _verify(gateway_url, api_keys["buffr"], body)
    assert r.status_code == status, r.text
    problem = r.json()
    assert problem["status"] == status and problem["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    if location:
        assert location in [e["location"] for e in problem.get("errors", [])]


def test_form_body_is_415(gateway_url, api_keys, pg) -> None:
    r = _verify(gateway_url, api_keys["buffr"], "id_number=12345678901",
                {"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


def test_bad_path_id_is_422_and_unknown_is_404(gateway_url, api_keys, pg) -> None:
    h = {"x-api-key": api_keys["buffr"]}
    assert httpx.get(f"{gateway_url}/api/v1/beneficiaries/abc", headers=h).status_code == 422
    r = httpx.get(f"{gateway_url}/api/v1/beneficiaries/3fa85f64-5717-4562-b3fc-2c963f66afa6", headers=h)
    assert r.status_code == 404 and r.json()["title"] == "Not found"


def test_unknown_route_is_gateway_403(gateway_url) -> None:
    r = httpx.get(f"{gateway_url}/api/v1/nowhere")
    assert r.status_code == 403 and r.json() == {"message": "Missing Authentication Token"}
