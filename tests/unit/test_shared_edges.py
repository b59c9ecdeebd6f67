"""The layer owns the shared edges: one Lambda entry for the API functions, one validation-error
format wherever input is checked, one reply for idempotent replays, header lookup in any casing."""

from __future__ import annotations

import importlib
import json

import pytest
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from smartpay import api, validation
from smartpay.internal import Redisburse
from smartpay_tools.local.template import Template

API_FUNCTIONS = sorted(k for k, spec in Template().functions().items() if spec.routes)


@pytest.mark.parametrize("logical_id", API_FUNCTIONS)
def test_every_api_function_enters_through_the_layers_wrapper(logical_id: str) -> None:
    spec = Template().functions()[logical_id]
    module_name, _, attribute = spec.handler.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    assert handler.__qualname__ == "api_handler.<locals>.lambda_handler"


def test_one_validation_format_for_requests_events_and_internal_events() -> None:
    from reconcile.handler import InvalidEvent, _request
    from webhook.models import parse_body

    with pytest.raises(RequestValidationError) as request_error:  # the webhook body, parsed after its signature
        parse_body(json.dumps({"type": "voucher.redeemed", "timestamp": "2026-11-01T00:00:00Z",
                               "data": {"voucher_id": "nope"}}).encode())
    reply = api.validation_problem(request_error.value)
    errors = json.loads(reply.body)["errors"]
    assert reply.status_code == 422 and {"location", "message", "type"} == set(errors[0])
    assert "body.data.voucher_id" in [e["location"] for e in errors]

    with pytest.raises(InvalidEvent) as event_error:  # reconcile's own events
        _request({"mode": "sideways"})
    assert event_error.value.errors[0]["location"] == "mode"
    assert str(event_error.value).startswith("invalid reconciliation event: mode: ")

    with pytest.raises(validation.InvalidEvent) as internal_error:  # the typed internal event
        validation.event_model(Redisburse, {"kind": "redisburse", "source": "x", "run_id": "r", "voucher_ids": []},
                               what="internal event")
    assert {e["location"] for e in internal_error.value.errors} == {"source", "run_id", "voucher_ids"}


def test_replayed_replies_say_so_and_fresh_ones_do_not() -> None:
    assert api.json_reply(200, {"a": 1}, replayed=True).headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in api.json_reply(201, {"a": 1}).headers


@pytest.mark.parametrize("headers", [{"Webhook-Id": "msg_1"}, {"WEBHOOK-ID": "msg_1"}, {"webhook-id": " msg_1 "}])
def test_header_lookup_is_case_insensitive(headers: dict) -> None:
    assert api.header(headers, "webhook-id") == "msg_1"
    assert api.header(headers, "idempotency-key") is None
