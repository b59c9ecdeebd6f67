"""Buffr's webhook payloads (Standard Webhooks shape, docs/architecture.md#webhook-signatures), validated after the signature.

Unlike the other edges, extra fields are *tolerated* here (``extra="ignore"``): Standard
Webhooks consumers must be forward compatible, and docs/architecture.md#webhook-signatures says so.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from smartpay.jsontypes import DateTime
from smartpay.lifecycle import VoucherStatus
from smartpay.validation import request_model

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"\S")]


class Envelope(BaseModel):
    """Every event: its type, when Buffr emitted it, and its data object.

    Buffr's integration guide names the type ``event``; Standard Webhooks names it ``type``:
    either is accepted (both present must agree). The envelope's ``timestamp`` is optional: the
    signed ``webhook-timestamp`` header already says when Buffr sent the delivery. No string in
    the event may hold U+0000 or an unpaired surrogate (it is stored as PostgreSQL jsonb): 422.
    """

    model_config = ConfigDict(defer_build=True, extra="ignore")

    type: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        validation_alias=AliasChoices("type", "event"))
    timestamp: DateTime | None = None
    data: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _one_type(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" in value and "event" in value and value["type"] != value["event"]:
            raise ValueError("type and event name different event types")
        return value


def event_type(payload: dict[str, Any]) -> str:
    """The event type of a validated payload (``type``, or the guide's alias ``event``)."""
    return str(payload["type"] if "type" in payload else payload["event"])


class EventData(BaseModel):
    """What every voucher event carries: which voucher, Buffr's delivery id, when it happened."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    voucher_id: uuid.UUID
    delivery_id: Text
    occurred_at: DateTime


class RedeemedData(EventData):
    amount_cents: Annotated[StrictInt, Field(gt=0, le=10**12)]
    channel: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50, pattern=r"\S")]


class ClosedData(EventData):
    """Cancellation: an optional reason from Buffr."""

    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class FailedData(ClosedData):
    """A failed delivery may never have had a delivery id at Buffr."""

    delivery_id: Text | None = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Kind:
    target: VoucherStatus
    model: type[EventData]


#: Event type → the status it reports and the shape of its data. Anything else is ignored.
KINDS: dict[str, Kind] = {
    "voucher.activated": Kind(VoucherStatus.ACTIVE, EventData),
    "voucher.delivered": Kind(VoucherStatus.ACTIVE, EventData),
    "voucher.redeemed": Kind(VoucherStatus.REDEEMED, RedeemedData),
    "voucher.expired": Kind(VoucherStatus.EXPIRED, EventData),
    "voucher.cancelled": Kind(VoucherStatus.CANCELLED, ClosedData),
    "voucher.failed": Kind(VoucherStatus.FAILED, FailedData),
}


def documented_body() -> dict[str, Any]:
    """The request body as the API document shows it, from the models that validate it: the
    envelope, and for each known type its ``data`` (JSON Schema ``if``/``then``). Other types are
    accepted and ignored (200), so ``type`` is not an enum."""
    schema = Envelope.model_json_schema()
    # ``type`` or its alias ``event``: the document names exactly one (the code also takes both
    # when they agree, which JSON Schema cannot say).
    schema["properties"]["event"] = schema["properties"]["type"]
    schema["required"] = [name for name in schema.get("required", []) if name != "type"]
    schema["oneOf"] = [{"required": ["type"], "not": {"required": ["event"]}},
                       {"required": ["event"], "not": {"required": ["type"]}}]
    schema["allOf"] = [
        {"if": {"anyOf": [{"properties": {"type": {"const": name}}, "required": ["type"]},
                          {"properties": {"event": {"const": name}}, "required": ["event"]}]},
         "then": {"properties": {"data": kind.model.model_json_schema()}}}
        for name, kind in sorted(KINDS.items())
    ]
    example = {"type": "voucher.activated", "timestamp": "2026-11-02T08:00:01Z",
               "data": {"voucher_id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "delivery_id": "dlv_01",
                        "occurred_at": "2026-11-02T08:00:00Z"}}
    return {"required": True, "content": {"application/json": {
        "schema": schema, "examples": {"activated": {"summary": "A voucher reached the wallet", "value": example}}}}}


def _storable(value: Any, where: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The location of the first value PostgreSQL's jsonb cannot hold (NUL, lone surrogate, ±inf)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return where if "\x00" in value else None
    if isinstance(value, float):
        return None if value == value and value not in (float("inf"), float("-inf")) else where
    if isinstance(value, dict):
        for key, item in value.items():
            found = _storable(key, (*where, key)) or _storable(item, (*where, key))
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _storable(item, (*where, index))
            if found:
                return found
    return None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(raw: bytes) -> tuple[dict[str, Any], Envelope]:
    """The verified body as (payload, envelope): not JSON → 400, bad fields → 422 (both as problems).

    A known event type's ``data`` is validated here too, so nothing invalid reaches the service.
    """
    try:
        payload = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "invalid JSON"}]) from None
    if not isinstance(payload, dict):
        raise RequestValidationError([{"type": "dict_type", "loc": ("body",), "msg": "the body must be a JSON object"}])
    bad = _storable(payload, ("body",))
    if bad:
        raise RequestValidationError([{"type": "string_unicode", "loc": bad, "msg": "unsupported character or number"}])
    envelope = request_model(Envelope, payload, prefix=("body",))
    kind = KINDS.get(envelope.type)
    if kind is not None:
        request_model(kind.model, envelope.data, prefix=("body", "data"))
    return payload, envelope

