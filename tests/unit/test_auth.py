"""API keys: hashed at rest, constant-time match, scopes drive the authorizer's policy."""

import json

import pytest

from smartpay import auth
from smartpay.errors import ConfigError


def store(*entries: tuple[str, str, list[str]]) -> list[dict]:
    return auth.parse_store(json.dumps([
        {"key_id": f"{p}-1", "principal": p, "sha256": auth.hash_key(k), "scopes": s} for p, k, s in entries
    ]))


def test_authenticate_finds_the_owner_of_a_key() -> None:
    entries = store(("buffr", "k-buffr", ["beneficiaries:read"]), ("operator", "k-op", ["vouchers:write"]))
    principal = auth.authenticate("k-op", entries)
    assert principal is not None and principal.principal == "operator"
    assert principal.scopes == {"vouchers:write"}


@pytest.mark.parametrize("presented", [None, "", "k-buffr ", "K-BUFFR", "nope"])
def test_unknown_keys_are_refused(presented: str | None) -> None:
    assert auth.authenticate(presented, store(("buffr", "k-buffr", ["beneficiaries:read"]))) is None


def test_two_keys_for_one_principal_during_rotation() -> None:
    entries = store(("buffr", "old", ["beneficiaries:read"]), ("buffr", "new", ["beneficiaries:read"]))
    assert auth.authenticate("old", entries).principal == "buffr"
    assert auth.authenticate("new", entries).principal == "buffr"


def test_invalid_store_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        auth.parse_store('[{"principal": "root", "sha256": "x", "scopes": []}]')
    with pytest.raises(ConfigError):
        auth.parse_store("not json")


def test_buffr_scope_opens_only_beneficiary_routes() -> None:
    routes = auth.routes_for(frozenset({"beneficiaries:read"}))
    assert routes == [("GET", "/api/v1/beneficiaries/{beneficiary_id}"), ("POST", "/api/v1/beneficiaries/verify")]


def test_problem_extension_members_never_override_standard_ones() -> None:
    import json

    from smartpay.api import problem

    reply = problem(409, "Conflict", "already issued", extra={"status": "issued", "voucher_id": "v1"})
    body = json.loads(reply.body)
    assert body["status"] == 409 and body["voucher_id"] == "v1" and body["title"] == "Conflict"
