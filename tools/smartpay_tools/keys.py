"""``smartpay keys add|list|revoke|rotate --stage S``: the deployed API-key store.

The store is the SSM SecureString the authorizer reads (template ``ApiKeysParameterName``,
``/smartpay/<stage>/api-keys`` in samconfig.toml): a JSON list of entries holding a key's
SHA-256 hash, never the key (``smartpay.auth``). A new key is generated here, its hash written,
and the key itself printed once. A revoked key stops working within the authorizer's two caches
(``AuthorizerTtlSeconds`` + ``AuthorizerStoreMaxAgeSeconds``, 60 s by default).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smartpay import auth

#: Scopes a new key gets unless ``--scopes`` says otherwise.
DEFAULT_SCOPES = {
    "buffr": ("beneficiaries:read",),
    "operator": ("beneficiaries:read", "vouchers:read", "vouchers:write", "reconcile:run"),
}
KNOWN_SCOPES = frozenset(scope for _, _, scope in auth.ROUTE_SCOPES) | {"reconcile:run"}
#: Revocation bound with the template's defaults (docs/deployment.md "API keys").
REVOCATION_SECONDS = 60


class KeyStoreError(Exception):
    """A refused change (unknown key id, duplicate, bad scope); nothing was written."""


def parameter_name(stage: str) -> str:
    return f"/smartpay/{stage}/api-keys"


def new_key(principal: str) -> str:
    """A fresh API key: 256 random bits, prefixed so a leaked one is recognisable in a scan."""
    return f"sp_{principal}_{secrets.token_urlsafe(32)}"


def new_key_id(principal: str) -> str:
    return f"{principal}-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"


@dataclass
class KeyStore:
    """Read-modify-write of the SSM parameter (one operator at a time; SSM keeps every version)."""

    ssm: Any
    name: str

    def entries(self) -> list[dict[str, Any]]:
        try:
            raw = self.ssm.get_parameter(Name=self.name, WithDecryption=True)["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return []
        return auth.parse_store(raw)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        auth.parse_store(json.dumps(entries))  # never write what the authorizer would refuse
        self.ssm.put_parameter(Name=self.name, Value=json.dumps(entries, separators=(",", ":")),
                               Type="SecureString", Overwrite=True,
                               Description="SmartPay API-key store (SHA-256 hashes only; smartpay keys)")

    def add(self, principal: str, *, scopes: list[str] | None = None, usage_key: str | None = None,
            key_id: str | None = None) -> tuple[dict[str, Any], str]:
        """Store a new key's hash; returns (entry, the key itself — shown once, never stored)."""
        if principal not in auth.PRINCIPALS:
            raise KeyStoreError(f"principal must be one of {', '.join(auth.PRINCIPALS)}")
        chosen = list(scopes) if scopes else list(DEFAULT_SCOPES[principal])
        unknown = sorted(set(chosen) - KNOWN_SCOPES)
        if unknown:
            raise KeyStoreError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}")
        entries = self.entries()
        key_id = key_id or new_key_id(principal)
        if any(e.get("key_id") == key_id for e in entries):
            raise KeyStoreError(f"key id {key_id} already exists")
        key = new_key(principal)
        entry: dict[str, Any] = {"key_id": key_id, "principal": principal, "sha256": auth.hash_key(key),
                                 "scopes": sorted(chosen), "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if usage_key:
            entry["usage_key"] = usage_key
        self._write([*entries, entry])
        return entry, key

    def revoke(self, key_id: str) -> dict[str, Any]:
        entries = self.entries()
        kept = [e for e in entries if e.get("key_id") != key_id]
        if len(kept) == len(entries):
            raise KeyStoreError(f"no key {key_id} in {self.name}")
        self._write(kept)
        return next(e for e in entries if e.get("key_id") == key_id)

    def rotate(self, key_id: str) -> tuple[dict[str, Any], str]:
        """A new key like ``key_id`` (principal, scopes, usage key); the old one stays until revoked."""
        old = next((e for e in self.entries() if e.get("key_id") == key_id), None)
        if old is None:
            raise KeyStoreError(f"no key {key_id} in {self.name}")
        return self.add(old["principal"], scopes=old["scopes"], usage_key=old.get("usage_key"))


def public_view(entry: dict[str, Any]) -> dict[str, Any]:
    """What ``keys list`` shows: never the hash or the usage-plan key value."""
    return {k: entry[k] for k in ("key_id", "principal", "scopes", "created_at") if k in entry} | {
        "metered": bool(entry.get("usage_key"))}


def usage_key_value(apigateway: Any, usage_key_id: str) -> str:
    """The value of an API Gateway usage-plan key (``BuffrUsageKeyId`` / ``OperatorUsageKeyId``)."""
    return str(apigateway.get_api_key(apiKey=usage_key_id, includeValue=True)["value"])
