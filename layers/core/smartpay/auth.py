"""API keys, principals and scopes (docs/architecture.md#security).

Keys are never stored: the key store holds SHA-256 hashes, compared in constant time against
*every* entry (no early exit), so timing reveals neither which key nor how much of it matched.
The store is a JSON list kept in SSM (``API_KEYS_PARAMETER``) or Secrets Manager
(``API_KEYS_SECRET``), fetched through Powertools Parameters with a cache; locally the
env-vars file gives it as ``API_KEYS``::

    [{"key_id": "buffr-2026-11", "principal": "buffr", "sha256": "<hex>",
      "scopes": ["beneficiaries:read"], "usage_key": "<API Gateway usage-plan key value>"}]

``usage_key`` (deployed: required) is the value of the API Gateway API key that the principal's
usage plan holds; the authorizer returns it as ``usageIdentifierKey`` (the API's key source is
AUTHORIZER), so API Gateway throttles and meters per principal. It is not a credential: callers
never send it, and API Gateway accepts it only from the authorizer.

Route → scope rules live here once; the authorizer turns them into an IAM policy (API Gateway
answers 403 for a route the principal lacks), and each function checks again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from smartpay.errors import ConfigError

#: (method, resource path as in the template, required scope)
ROUTE_SCOPES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/api/v1/beneficiaries/{beneficiary_id}", "beneficiaries:read"),
    ("POST", "/api/v1/beneficiaries/verify", "beneficiaries:read"),
    ("POST", "/api/v1/vouchers", "vouchers:write"),
    ("GET", "/api/v1/vouchers/{voucher_id}", "vouchers:read"),
    # Cycle runs: operators prepare, pause and resume; approving (releasing money) is a scope of
    # its own, and the service refuses a checker with the maker's key or principal (four eyes).
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement", "vouchers:write"),
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/supplementary", "vouchers:write"),
    ("GET", "/api/v1/cycles/{programme}/{cycle}/disbursement", "vouchers:read"),
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/approve", "cycles:approve"),
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/pause", "vouchers:write"),
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/resume", "vouchers:write"),
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/cancel", "cycles:approve"),
)

#: ``supervisor``: the checker of cycle runs (scope ``cycles:approve``), a principal apart from
#: the operators who prepare them, so four eyes hold even across an operator's several keys.
PRINCIPALS = ("buffr", "operator", "supervisor")


@dataclass(frozen=True)
class Principal:
    principal: str
    key_id: str
    scopes: frozenset[str]
    #: The usage-plan API key value for this principal (None: not metered, e.g. locally).
    usage_key: str | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_store(raw: str) -> list[dict]:
    try:
        entries = json.loads(raw)
        if not isinstance(entries, list):
            raise ValueError("not a list")
        for entry in entries:
            if entry["principal"] not in PRINCIPALS or len(entry["sha256"]) != 64:
                raise ValueError(f"bad entry {entry.get('key_id')}")
            if not isinstance(entry.get("usage_key", ""), str):
                raise ValueError(f"bad usage_key in entry {entry.get('key_id')}")
            entry["scopes"] = list(entry["scopes"])
        return entries
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"API key store is invalid: {exc}") from None


def authenticate(presented: str | None, entries: list[dict]) -> Principal | None:
    """The principal owning ``presented``, checking every entry in constant time."""
    if not presented:
        return None
    digest = hash_key(presented).encode()
    found: dict | None = None
    for entry in entries:
        if hmac.compare_digest(digest, entry["sha256"].encode()):
            found = entry
    if found is None:
        return None
    return Principal(found["principal"], found.get("key_id", found["principal"]), frozenset(found["scopes"]),
                     found.get("usage_key") or None)


def routes_for(scopes: frozenset[str]) -> list[tuple[str, str]]:
    """The (method, resource) pairs a set of scopes opens."""
    return [(method, path) for method, path, scope in ROUTE_SCOPES if scope in scopes]


def scopes_from_context(authorizer_context: dict | None) -> frozenset[str]:
    raw = (authorizer_context or {}).get("scopes") or ""
    return frozenset(s for s in str(raw).split() if s)
