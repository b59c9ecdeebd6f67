"""Every operation by every caller, generated from openapi.json and the scope table (smartpay.auth).

For each operation the document lists: no key and an unknown key are API Gateway's 401; each
local key is allowed exactly when its key-store entry holds the route's scope (``ROUTE_SCOPES``)
and is API Gateway's 403 otherwise. An open route (``security: []``, the signed webhook) never
asks for a key: the function answers, and refuses an unsigned request itself.

Nothing here lists routes or principals by hand: a route added to the template without a scope
entry fails :func:`test_every_keyed_operation_has_exactly_one_scope`, and a new scope (say
``cycles:approve``) only needs its ``ROUTE_SCOPES`` line and a key store entry that holds it.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest

from smartpay import auth
from smartpay_tools import PROJECT_ROOT

pytestmark = pytest.mark.integration

DOCUMENT = json.loads((PROJECT_ROOT / "openapi.json").read_text())
OPERATIONS = sorted((method.upper(), path, op) for path, ops in DOCUMENT["paths"].items()
                    for method, op in ops.items())
KEYED = [(method, path) for method, path, op in OPERATIONS if op.get("security", DOCUMENT["security"]) != []]
OPEN = [(method, path) for method, path, op in OPERATIONS if op.get("security", DOCUMENT["security"]) == []]
UNKNOWN_KEY = "not-a-key-" + uuid.uuid4().hex
LOCAL_KEYS = ("BuffrApiKey", "OperatorApiKey", "PaymentsApiKey", "SupervisorApiKey")  # env.local.json's LocalStack section


def _scope(method: str, path: str) -> str | None:
    scopes = [scope for m, p, scope in auth.ROUTE_SCOPES if (m, p) == (method, path)]
    return scopes[0] if len(scopes) == 1 else None


def _url(base: str, path: str) -> str:
    return base + re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def _call(base: str, method: str, path: str, key: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["x-api-key"] = key
    # An empty object: enough to reach the function (which then refuses it, 4xx), never enough to
    # change anything, so the matrix can run against any state.
    content = b"{}" if method in ("POST", "PUT", "PATCH") else None
    return httpx.request(method, _url(base, path), headers=headers, content=content, timeout=60)


def _from_gateway(reply: httpx.Response, status: int) -> bool:
    """API Gateway's own refusal: its JSON message, never a function's problem document."""
    return (reply.status_code == status and reply.headers["content-type"] == "application/json"
            and "message" in {k.lower() for k in reply.json()})


def _from_function(reply: httpx.Response) -> bool:
    """The request got past API Gateway: the function answered (a problem or a result), not 401/403."""
    return reply.status_code not in (401, 403, 500, 502) and "x-amzn-errortype" not in reply.headers


@pytest.fixture(scope="module")
def callers(local_stack: Any) -> dict[str, tuple[str, frozenset[str]]]:
    """Each local key → (its key, the scopes its key-store entry holds)."""
    from smartpay_tools.local import envfile

    store = auth.parse_store(envfile.load()["AuthorizerFunction"]["API_KEYS"])  # what the local authorizer holds
    out = {}
    for name in LOCAL_KEYS:
        key = local_stack.local[name]
        principal = auth.authenticate(key, store)
        assert principal is not None, f"{name} is not in the local key store"
        out[name] = (key, principal.scopes)
    return out


def test_every_keyed_operation_has_exactly_one_scope() -> None:
    missing = [f"{m} {p}" for m, p in KEYED if _scope(m, p) is None]
    assert not missing, f"routes without exactly one ROUTE_SCOPES entry (smartpay/auth.py): {missing}"
    stale = [f"{m} {p}" for m, p, _ in auth.ROUTE_SCOPES if (m, p) not in KEYED]
    assert not stale, f"ROUTE_SCOPES entries for no keyed operation of openapi.json: {stale}"


def test_the_matrix_covers_every_scope_both_ways(callers) -> None:
    """Each scope is held by some local key and lacked by another, so both answers are exercised."""
    for scope in {scope for _, _, scope in auth.ROUTE_SCOPES}:
        holders = [name for name, (_, scopes) in callers.items() if scope in scopes]
        assert holders, f"no local key holds {scope}: its allowed path is never tried"
    assert any(not {s for *_, s in auth.ROUTE_SCOPES} <= scopes for _, scopes in callers.values())


@pytest.mark.parametrize(("method", "path"), KEYED, ids=[f"{m} {p}" for m, p in KEYED])
def test_keyed_operation_answers_each_caller_as_its_scope_says(gateway_url, callers, method, path) -> None:
    scope = _scope(method, path)
    assert scope is not None, f"{method} {path} has no ROUTE_SCOPES entry"
    assert _from_gateway(_call(gateway_url, method, path, None), 401), "no key"
    assert _from_gateway(_call(gateway_url, method, path, UNKNOWN_KEY), 401), "unknown key"
    for name, (key, scopes) in sorted(callers.items()):
        reply = _call(gateway_url, method, path, key)
        if scope in scopes:
            assert _from_function(reply), f"{name} holds {scope} but got {reply.status_code} {reply.text}"
        else:
            assert _from_gateway(reply, 403), f"{name} lacks {scope} but got {reply.status_code} {reply.text}"
            assert reply.headers["x-amzn-errortype"] == "AccessDeniedException"


@pytest.mark.parametrize(("method", "path"), OPEN, ids=[f"{m} {p}" for m, p in OPEN])
def test_open_operation_ignores_keys_and_refuses_an_unsigned_request_itself(gateway_url, callers, pg, method,
                                                                             path) -> None:
    keys = [None, UNKNOWN_KEY, *(key for key, _ in callers.values())]
    for key in keys:
        reply = _call(gateway_url, method, path, key)
        assert reply.status_code == 401 and reply.headers["content-type"] == "application/problem+json", (
            key, reply.status_code, reply.text)
    assert pg.execute("SELECT count(*) AS n FROM webhook_events").fetchone()["n"] == 0
