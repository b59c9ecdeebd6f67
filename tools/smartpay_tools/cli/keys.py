"""``smartpay keys add|list|revoke|rotate --stage S``: the deployed API-key store.

The store is the SSM path the authorizer reads (template ``ApiKeysParameterName``,
``/smartpay/<stage>/api-keys`` in samconfig.toml): one SecureString parameter per key, named by
its key id, holding the key's SHA-256 hash, never the key (``smartpay.auth``). Each change is
one atomic SSM call on one key (create-if-absent, delete), so concurrent operators never undo
each other (no read-modify-write that could bring back a key just revoked), and the store has
room for thousands of keys. A new key is generated here, its hash written, and the key itself
printed once. A revoked key stops working within the authorizer's two caches
(``AuthorizerTtlSeconds`` + ``AuthorizerStoreMaxAgeSeconds``, 60 s by default).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smartpay import auth
from smartpay_tools.cli.common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

#: Scopes a new key gets unless ``--scopes`` says otherwise.
DEFAULT_SCOPES = {
    "buffr": ("beneficiaries:read",),
    "operator": ("beneficiaries:read", "vouchers:read", "vouchers:write", "reconcile:run"),
}
KNOWN_SCOPES = frozenset(scope for _, _, scope in auth.ROUTE_SCOPES) | {"reconcile:run"}
#: Revocation bound with the template's defaults (docs/deployment.md "API keys").
REVOCATION_SECONDS = 60


#: What SSM allows in a parameter name's last segment (a key id names its parameter).
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


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
    """The SSM path ``name``: one SecureString per key at ``<name>/<key id>`` (SSM keeps versions)."""

    ssm: Any
    name: str

    def _parameter(self, key_id: str) -> str:
        return f"{self.name.rstrip('/')}/{key_id}"

    def entries(self) -> list[dict[str, Any]]:
        values = [p["Value"] for page in self.ssm.get_paginator("get_parameters_by_path").paginate(
            Path=self.name, Recursive=False, WithDecryption=True) for p in page["Parameters"]]
        return sorted(auth.parse_store("[" + ",".join(values) + "]"), key=lambda e: e["key_id"])

    def add(self, principal: str, *, scopes: list[str] | None = None, usage_key: str | None = None,
            key_id: str | None = None) -> tuple[dict[str, Any], str]:
        """Store a new key's hash; returns (entry, the key itself — shown once, never stored)."""
        if principal not in auth.PRINCIPALS:
            raise KeyStoreError(f"principal must be one of {', '.join(auth.PRINCIPALS)}")
        chosen = list(scopes) if scopes else list(DEFAULT_SCOPES[principal])
        unknown = sorted(set(chosen) - KNOWN_SCOPES)
        if unknown:
            raise KeyStoreError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}")
        key_id = key_id or new_key_id(principal)
        if not KEY_ID.match(key_id):
            raise KeyStoreError("a key id is 1-100 letters, digits, '.', '_' or '-'")
        key = new_key(principal)
        entry: dict[str, Any] = {"key_id": key_id, "principal": principal, "sha256": auth.hash_key(key),
                                 "scopes": sorted(chosen), "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if usage_key:
            entry["usage_key"] = usage_key
        value = json.dumps(entry, separators=(",", ":"))
        auth.parse_store(f"[{value}]")  # never write what the authorizer would refuse
        try:  # create-if-absent: one atomic call, never an overwrite
            self.ssm.put_parameter(Name=self._parameter(key_id), Value=value, Type="SecureString", Overwrite=False,
                                   Description="SmartPay API key (SHA-256 hash only; smartpay keys)")
        except self.ssm.exceptions.ParameterAlreadyExists:
            raise KeyStoreError(f"key id {key_id} already exists") from None
        return entry, key

    def _entry(self, key_id: str) -> dict[str, Any]:
        if not KEY_ID.match(key_id):
            raise KeyStoreError(f"no key {key_id} in {self.name}")
        try:
            raw = self.ssm.get_parameter(Name=self._parameter(key_id), WithDecryption=True)["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            raise KeyStoreError(f"no key {key_id} in {self.name}") from None
        return auth.parse_store(f"[{raw}]")[0]

    def revoke(self, key_id: str) -> dict[str, Any]:
        entry = self._entry(key_id)
        try:  # one atomic call on this key only: a concurrent add cannot bring it back
            self.ssm.delete_parameter(Name=self._parameter(key_id))
        except self.ssm.exceptions.ParameterNotFound:
            raise KeyStoreError(f"no key {key_id} in {self.name}") from None
        return entry

    def rotate(self, key_id: str) -> tuple[dict[str, Any], str]:
        """A new key like ``key_id`` (principal, scopes, usage key); the old one stays until revoked."""
        old = self._entry(key_id)
        return self.add(old["principal"], scopes=old["scopes"], usage_key=old.get("usage_key"))


def public_view(entry: dict[str, Any]) -> dict[str, Any]:
    """What ``keys list`` shows: never the hash or the usage-plan key value."""
    return {k: entry[k] for k in ("key_id", "principal", "scopes", "created_at") if k in entry} | {
        "metered": bool(entry.get("usage_key"))}


def usage_key_value(apigateway: Any, usage_key_id: str) -> str:
    """The value of an API Gateway usage-plan key (``BuffrUsageKeyId`` / ``OperatorUsageKeyId``)."""
    return str(apigateway.get_api_key(apiKey=usage_key_id, includeValue=True)["value"])


# --- the ``smartpay keys`` command -------------------------------------------------------------


def add_commands(command: Any) -> None:
    """Register ``keys``; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("keys", "issue, list, revoke or rotate the deployed API keys (SSM key store; hashes only)",
                "Edits the key store the authorizer reads (SSM path /smartpay/<stage>/api-keys, one SecureString "
                "per key): only "
                "each key's SHA-256 hash is stored; a new key is printed once and never again. A revoked key "
                f"stops working within {REVOCATION_SECONDS} s (AuthorizerTtlSeconds + AuthorizerStoreMaxAgeSeconds). "
                "Uses your AWS credentials; docs/operations.md has the runbook.")
    p.add_argument("action", choices=("add", "list", "revoke", "rotate"),
                   help="add: issue a new key; list: show ids and scopes; revoke KEY_ID; rotate KEY_ID: a new key "
                        "like it (the old one works until revoked)")
    p.add_argument("key_id", nargs="?", help="the key to revoke or rotate (add: optional id for the new key)")
    p.add_argument("--stage", required=True, help="the stack's Stage (dev, prod): names the parameter")
    p.add_argument("--parameter", help="the SSM path (default /smartpay/<stage>/api-keys, as in samconfig.toml)")
    p.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    p.add_argument("--principal", choices=auth.PRINCIPALS, help="add: who the key is for")
    p.add_argument("--scopes", nargs="+", help="add: scopes (default: the principal's usual ones)")
    usage = p.add_mutually_exclusive_group()
    usage.add_argument("--usage-key-id", help="add: the principal's usage-plan key id (stack output "
                                              "BuffrUsageKeyId / OperatorUsageKeyId); its value is looked up")
    usage.add_argument("--usage-key", help="add: the usage-plan key value itself")
    p.set_defaults(func=cmd_keys)


def cmd_keys(args: Any) -> int:
    import sys

    import boto3
    import botocore.exceptions

    if args.stage == "local":
        print("error: the local stage's keys live in env.local.json (AuthorizerFunction.API_KEYS)", file=sys.stderr)
        return EXIT_USAGE
    store = KeyStore(boto3.client("ssm", region_name=args.region), args.parameter or parameter_name(args.stage))
    try:
        if args.action == "list":
            for entry in store.entries():
                print(json.dumps(public_view(entry)))
            return EXIT_OK
        if args.action == "add":
            if not args.principal:
                print("error: keys add needs --principal", file=sys.stderr)
                return EXIT_USAGE
            usage_key = args.usage_key
            if args.usage_key_id:
                usage_key = usage_key_value(boto3.client("apigateway", region_name=args.region), args.usage_key_id)
            entry, key = store.add(args.principal, scopes=args.scopes, usage_key=usage_key, key_id=args.key_id)
        elif not args.key_id:
            print(f"error: keys {args.action} needs KEY_ID", file=sys.stderr)
            return EXIT_USAGE
        elif args.action == "revoke":
            entry = store.revoke(args.key_id)
            print(f"revoked {entry['key_id']} ({entry['principal']}) in {store.name}: it stops working within "
                  f"{REVOCATION_SECONDS} s")
            return EXIT_OK
        else:
            entry, key = store.rotate(args.key_id)
    except KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"{entry['key_id']} ({entry['principal']}: {' '.join(entry['scopes'])}) stored in {store.name} as its "
          "SHA-256 hash. The key, shown this once:", file=sys.stderr)
    print(key)
    if not entry.get("usage_key"):
        print("warning: no usage-plan key (--usage-key-id): API Gateway refuses this key's requests (403) until "
              "the entry has one", file=sys.stderr)
    return EXIT_OK
