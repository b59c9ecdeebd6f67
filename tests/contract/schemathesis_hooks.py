"""Schemathesis hooks for the contract test (loaded by ``st run`` through ``SCHEMATHESIS_HOOKS``).

The document says everything JSON Schema can say; these hooks supply what only the running
system knows, so that schema-valid requests reach the 2xx paths instead of stopping at a
business refusal. Each rewrite keeps a value's type and shape (Schemathesis re-validates a case a
hook changed, so a negative case stays negative and is judged as one):

* a header Schemathesis invents to see it refused is dropped (HTTP headers are an open set);
* references point at seeded rows: a ``beneficiary_id`` at an active beneficiary, a
  ``voucher_id`` (path, a supplementary run's list, webhook data) at a seeded voucher — else every one is a 404;
* ``POST /api/v1/vouchers``: ``programme`` is the beneficiary's own, ``amount_cents`` within that
  programme's maximum (reference data in the database) and an integer (``140000.0`` is refused on
  purpose; so for a redemption webhook's amount too), ``expires_at`` in the future (the
  document says so in words: JSON Schema has no "after now"), and the Idempotency-Key is derived
  from the body, so a repeated body is a replay and two bodies never share a key (the same key
  with another body is a documented 422);
* ``POST /api/v1/beneficiaries/verify``: half the generated ID numbers (by their hash) become a
  seeded beneficiary's, with that person's own name and phone in whichever of those fields the
  case has, and a voucher of theirs (a real voucher already in the case picks the person: its
  owner), so those verifies fully match (the profile, and the link to it) and the rest answer
  ``{"match": false}``; a case with any field out of shape is left as generated;
* the webhook body is signed with the local secret (Standard Webhooks): the exact bytes sent are
  signed, with the generated webhook-id, and only when the generated ``webhook-*`` headers are all
  there and well-formed, so a case that leaves one out or breaks one still tests the 401; its
  optional Idempotency-Key is derived from the body, as for issuing.

* the cycle-run routes (``/api/v1/cycles/{programme}/{cycle}/disbursement…``): a schema-valid
  programme and cycle become the seeded cycle (issued vouchers of a seeded programme), so
  preparing, approving, pausing, resuming and cancelling reach their state machine instead of a
  404; approval and cancel are sent with the supervisor's key (four eyes: the operator key that
  prepared or paused may not), unless the case left the key out or changed it; approval names the
  run (id and fingerprint) a 2xx reply last showed, as a checker names what they reviewed; a
  supplementary run's Idempotency-Key is derived from its body, as for issuing.

``SMARTPAY_FUZZ_SEEDS`` names the JSON file the test wrote with the seeded ids;
``SMARTPAY_FUZZ_SECRET`` holds the webhook signing secrets; ``SMARTPAY_FUZZ_KEY`` and
``SMARTPAY_FUZZ_APPROVER_KEY`` are the operator's and the supervisor's API keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

from smartpay import signing

WEBHOOK_PATH = "/api/v1/webhooks/buffr"
CYCLE_RUN_PATH = "/api/v1/cycles/{programme}/{cycle}/disbursement"
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: What a generated signature header must look like (the document's schemas) to be replaced by a real one.
SIGNATURE_SHAPES = {"webhook-id": signing._WEBHOOK_ID, "webhook-timestamp": signing._TIMESTAMP,
                    "webhook-signature": re.compile(r"^.+$", re.DOTALL)}
#: The shapes a verify body's fields must have (the document's) for the case to be made a match.
VERIFY_SHAPES = {"id_number": re.compile(r"[0-9]{11}"), "full_name": re.compile(r"(?=.*\S).{1,200}", re.DOTALL),
                 "msisdn": re.compile(r"\+?264[0-9]{8,9}")}
UNEXPECTED_HEADERS = {"x-schemathesis-unknown-property", "schemathesis-unknown-property", "unknown-property-0"}


@cache
def seeds() -> dict[str, Any]:
    with open(os.environ["SMARTPAY_FUZZ_SEEDS"], encoding="utf-8") as handle:
        loaded = json.load(handle)
    KNOWN.update(v.lower() for v in loaded["beneficiaries"] + loaded["vouchers"])
    OWNERS.update((p["voucher_id"].lower(), p["beneficiary_id"].lower()) for p in loaded["people"])
    return loaded


#: Ids of rows that exist: seeded, or seen in a reply (a link's value is left as it is).
KNOWN: set[str] = set()
#: Whose voucher it is (voucher id -> beneficiary id): seeded, or seen in a reply that names both.
OWNERS: dict[str, str] = {}
#: A voucher's status as last seen in a reply (a voucher not seen since seeding is as seeded: open).
STATUSES: dict[str, str] = {}
OPEN = {"issued", "pending", "active"}
#: The run a reply last showed (prepare, status): what a checker approves, by id and fingerprint.
LAST_RUN: dict[str, str] = {}


def _pick(pool: list[str], value: Any) -> Any:
    """A seeded id for a generated UUID string (stable per value); a known id or anything else unchanged."""
    if not isinstance(value, str) or value.lower() in KNOWN or value.lower() in map(str.lower, pool):
        return value
    try:
        uuid.UUID(value)
    except ValueError:
        return value
    return pool[int(hashlib.sha256(value.encode()).hexdigest(), 16) % len(pool)]


def _collect(value: Any) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("run_id"), str) and isinstance(value.get("fingerprint"), str):
            LAST_RUN.update(run_id=value["run_id"], fingerprint=value["fingerprint"])
        voucher = value.get("voucher_id")
        if isinstance(voucher, str) and isinstance(value.get("beneficiary_id"), str):
            OWNERS[voucher.lower()] = value["beneficiary_id"].lower()
        if isinstance(voucher, str) and isinstance(value.get("status"), str):
            STATUSES[voucher.lower()] = value["status"]
        for key, item in value.items():
            if key in ("voucher_id", "beneficiary_id") and isinstance(item, str):
                KNOWN.add(item.lower())
            else:
                _collect(item)
    elif isinstance(value, list):
        for item in value:
            _collect(item)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if 200 <= response.status_code < 300:
        with contextlib.suppress(ValueError):
            _collect(response.json())


def _future(value: Any) -> Any:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return value
    if not isinstance(value, str) or moment.tzinfo is None:
        return value
    return (datetime.now(UTC) + timedelta(days=30)).isoformat()


def _headers(case: Any) -> dict[str, Any]:
    if case.headers is None:
        case.headers = {}
    return case.headers


def _integer_cents(body: dict[str, Any]) -> Any:
    """JSON Schema counts 140000.0 as an integer; the API refuses it on purpose (money travels as
    integer cents, never a float; the document says so in words), so send the integer itself."""
    amount = body.get("amount_cents")
    if isinstance(amount, float) and amount.is_integer() and amount > 0:
        amount = body["amount_cents"] = int(amount)
    return amount


def _issue(case: Any) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if "beneficiary_id" in body:
        body["beneficiary_id"] = _pick(seeds()["beneficiaries"], body["beneficiary_id"])
    if isinstance(body.get("programme"), str) and "beneficiary_id" in body:
        body["programme"] = seeds()["programme"]
    maximum = seeds()["programme_max"]
    amount = _integer_cents(body)
    if type(amount) is int and amount > maximum:
        body["amount_cents"] = 1 + amount % maximum
    if "expires_at" in body:
        body["expires_at"] = _future(body["expires_at"])
    _key_from_body(case, body)


def _key_from_body(case: Any, body: Any) -> None:
    """A present Idempotency-Key derived from the body: a repeated body is a replay, and two bodies
    never share a key (the same key with another body is a documented 422)."""
    headers = _headers(case)
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) and headers[name].strip():
            digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
            headers[name] = f"fuzz-{digest[:40]}"


def _run_body(case: Any, path: str) -> None:
    """A supplementary run names seeded vouchers; an approval names the run a reply last showed."""
    body, meta = case.body, case.meta
    if not isinstance(body, dict) or (meta is not None and meta.is_negative_at(ParameterLocation.BODY)):
        return
    if path.endswith("/supplementary"):
        if isinstance(body.get("voucher_ids"), list):
            body["voucher_ids"] = [_pick(seeds()["vouchers"], v) for v in body["voucher_ids"]]
        _key_from_body(case, body)
    elif path.endswith("/approve") and LAST_RUN:
        body.update(LAST_RUN)


def _verify(case: Any) -> None:
    body, meta, people = case.body, case.meta, seeds()["people"]
    if not isinstance(body, dict) or (meta is not None and meta.is_negative_at(ParameterLocation.BODY)):
        return
    supplied = {k: v for k, v in body.items() if v is not None}  # null: the field is not supplied
    if not isinstance(supplied.get("id_number"), str) or not set(supplied) <= {*VERIFY_SHAPES, "voucher_id"} or not all(
            isinstance(v, str) and shape.fullmatch(v) for k, v in supplied.items() if (shape := VERIFY_SHAPES.get(k))):
        return
    digest = int(hashlib.sha256(supplied["id_number"].encode()).hexdigest(), 16)
    if digest % 2 or supplied["id_number"] in {p["id_number"] for p in people}:
        return  # this ID number stays unknown: {"match": false}
    voucher = supplied.get("voucher_id")
    if isinstance(voucher, str) and voucher.lower() in KNOWN:
        # a real voucher (seeded, or from a reply): its owner's details, if the seeds say who that is
        person = next((p for p in people if p["beneficiary_id"].lower() == OWNERS.get(voucher.lower())), None)
        if person is None:
            return
    else:
        if voucher is not None:
            try:
                uuid.UUID(str(voucher))
            except ValueError:
                return
        # someone whose own voucher is still open, as far as the replies tell
        candidates = [p for p in people if STATUSES.get(p["voucher_id"].lower(), "issued") in OPEN] or people
        person = candidates[digest // 2 % len(candidates)]
        if voucher is not None:
            body["voucher_id"] = person["voucher_id"]
    for field in ("id_number", "full_name", "msisdn"):
        if field in supplied:
            body[field] = person[field]


def _webhook(case: Any) -> None:
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("data"), dict) and "voucher_id" in body["data"]:
        body["data"]["voucher_id"] = _pick(seeds()["vouchers"], body["data"]["voucher_id"])
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        _integer_cents(body["data"])  # a redemption's amount, as for issuing
    headers = _headers(case)
    present = {name.lower(): name for name in headers}
    generated = {name: headers.get(present.get(name, name)) for name in SIGNATURE_HEADERS}
    meta = case.meta
    if (meta is not None and meta.is_negative_at(ParameterLocation.HEADER)) or not all(
            isinstance(v, str) and SIGNATURE_SHAPES[k].match(v) for k, v in generated.items()):
        return  # a missing or malformed signature header tests the 401: leave the case as generated
    try:  # the bytes requests will send for this body (its json= encoding), so the signature holds
        raw = body if isinstance(body, bytes) else b"null" if body is None else b"" if type(body).__name__ == "NotSet" \
            else json.dumps(body, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError):
        return  # NaN / Infinity: not JSON, refused unsigned
    # One event, one id: the webhook-id (the idempotency key without Idempotency-Key) and the
    # Idempotency-Key follow the body, so a repeat is a replay and two events never share a key.
    digest = hashlib.sha256(raw).hexdigest()[:40]
    for name in [n for n in headers if n.lower() == "idempotency-key"]:
        headers[name] = f"fuzz-{digest}"
    try:
        signed = signing.sign_headers(os.environ["SMARTPAY_FUZZ_SECRET"], raw, webhook_id=f"msg_{digest}")
    except signing.SignatureError:
        return  # not UTF-8: Standard Webhooks signs text, so it goes unsigned (a 401)
    for name, value in signed.items():
        headers[present[name]] = value


def _cycle_run(case: Any, path: str) -> None:
    meta = case.meta
    if meta is not None and meta.is_negative_at(ParameterLocation.PATH):
        return  # an invalid programme or cycle tests the 422: leave it as generated
    case.path_parameters.update(seeds()["cycle_run"])
    _run_body(case, path)
    if path.endswith(("/approve", "/cancel")):
        for name, value in list(_headers(case).items()):
            if name.lower() == "x-api-key" and value == os.environ["SMARTPAY_FUZZ_KEY"]:
                case.headers[name] = os.environ["SMARTPAY_FUZZ_APPROVER_KEY"]


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # Headers are an open set in HTTP: no API refuses a request for a header it does not know, so
    # Schemathesis' "unexpected header" negative case is not one (body extras are still refused).
    for name in [n for n in case.headers or {} if n.lower() in UNEXPECTED_HEADERS]:
        del case.headers[name]
    operation = case.operation
    method, path = operation.method.upper(), operation.path
    if path_parameters := case.path_parameters:
        for name in ("voucher_id",):
            if name in path_parameters:
                path_parameters[name] = _pick(seeds()["vouchers"], path_parameters[name])
        if "beneficiary_id" in path_parameters:
            path_parameters["beneficiary_id"] = _pick(seeds()["beneficiaries"], path_parameters["beneficiary_id"])
    if (method, path) == ("POST", "/api/v1/vouchers"):
        _issue(case)
    elif (method, path) == ("POST", "/api/v1/beneficiaries/verify"):
        _verify(case)
    elif (method, path) == ("POST", WEBHOOK_PATH):
        _webhook(case)
    elif path.startswith(CYCLE_RUN_PATH) and case.path_parameters:
        _cycle_run(case, path)
