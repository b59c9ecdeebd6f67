"""Reconcile → disburse through the typed internal event (smartpay.internal.Redisburse), not a fabricated
API Gateway event: accepted from reconcile, refused otherwise, and the same path locally and deployed."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import botocore.exceptions
import pytest

from smartpay.internal import Redisburse
from smartpay.validation import InvalidEvent
from tests import factories
from tests.fixtures_disburse import lambda_context

pytestmark = pytest.mark.integration


def _pending(pg: Any) -> str:
    v = factories.voucher(pg, factories.beneficiary(pg)["id"], status="pending")
    return str(v["id"])


def _trail(pg: Any, voucher_id: str) -> list[tuple]:
    rows = pg.execute("SELECT from_status, to_status, source, reference FROM voucher_events WHERE voucher_id = %s "
                      "ORDER BY id", (voucher_id,)).fetchall()
    return [(r["from_status"], r["to_status"], r["source"], r["reference"]) for r in rows]


def test_disburse_accepts_reconciles_typed_event(disburse_env, pg, sim) -> None:
    from disburse.handler import lambda_handler

    voucher_id, run_id = _pending(pg), str(uuid.uuid4())
    reply = lambda_handler(Redisburse(run_id=run_id, voucher_ids=[voucher_id]).model_dump(mode="json"),
                           lambda_context())
    assert reply["kind"] == "redisburse"
    assert [(r["voucher_id"], r["outcome"], r["status"]) for r in reply["results"]] == [
        (voucher_id, "active", "active")]
    assert sim.stats(detail=True)["credits_per_voucher"] == {voucher_id: 1}
    assert _trail(pg, voucher_id)[-1] == ("pending", "active", "disburse", f"reconcile-{run_id}")


@pytest.mark.parametrize("change", [
    {"source": "operator"},                       # only reconcile may ask for a re-send
    {"kind": "disburse"},                          # an unknown internal event
    {"principal": "reconcile"},                    # anything extra (e.g. a forged identity) is refused
    {"voucher_ids": []},                           # nothing to send is not a request
])
def test_disburse_refuses_any_other_direct_event(disburse_env, pg, sim, change: dict) -> None:
    from disburse.handler import lambda_handler

    voucher_id = _pending(pg)
    event = {**Redisburse(run_id=uuid.uuid4(), voucher_ids=[voucher_id]).model_dump(mode="json"), **change}
    with pytest.raises(InvalidEvent, match="invalid direct invocation"):
        lambda_handler(event, lambda_context())
    assert sim.stats(detail=True)["credits_per_voucher"] == {}
    assert [t[1] for t in _trail(pg, voucher_id)] == ["issued", "pending"]  # the factory's rows: nothing changed


def test_the_old_fabricated_batch_body_is_refused_when_invoked_directly(disburse_env, pg, sim) -> None:
    """A batch body with a forged authorizer (the removed batch route's shape) is not a way in."""
    from disburse.handler import lambda_handler

    voucher_id = _pending(pg)
    with pytest.raises(InvalidEvent):
        lambda_handler({"voucher_ids": [voucher_id], "authorizer": {"principal": "reconcile",
                                                                    "scopes": "vouchers:write"}}, lambda_context())
    assert sim.stats(detail=True)["credits_per_voucher"] == {}


def _lambda(local_stack: Any, caller: str | None) -> Any:
    """boto3 as that function's workers get it (its own endpoint URL), or as no function at all."""
    endpoint = local_stack.lambda_endpoint
    return boto3.client("lambda", endpoint_url=endpoint.url_for(caller) if caller else endpoint.url,
                        region_name=local_stack.region, aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.mark.parametrize("caller", ["WebhookFunction", "BeneficiariesFunction", None])
def test_the_local_lambda_endpoint_lets_only_the_templates_invoker_in(local_stack, pg, sim, caller) -> None:
    voucher_id = _pending(pg)
    event = Redisburse(run_id=uuid.uuid4(), voucher_ids=[voucher_id]).model_dump_json()
    client = _lambda(local_stack, caller)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client.invoke(FunctionName=local_stack.functions["DisburseFunction"].name, Payload=event.encode())
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert sim.stats(detail=True)["credits_per_voucher"] == {}
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (voucher_id,)).fetchone()["status"] == "pending"


def test_the_local_lambda_endpoint_lets_reconcile_in(local_stack, pg, sim) -> None:
    voucher_id = _pending(pg)
    event = Redisburse(run_id=uuid.uuid4(), voucher_ids=[voucher_id]).model_dump_json()
    reply = _lambda(local_stack, "ReconcileFunction").invoke(
        FunctionName=local_stack.functions["DisburseFunction"].name, Payload=event.encode())
    assert "FunctionError" not in reply
    assert sim.stats(detail=True)["credits_per_voucher"] == {voucher_id: 1}


def test_each_function_gets_its_own_lambda_endpoint_url_and_so_does_sam_local(local_stack) -> None:
    """The runner's workers and the SAM env-vars file carry the same per-function endpoint: one path."""
    from smartpay_tools.local import sam_env

    spec = local_stack.functions["ReconcileFunction"]
    mine = local_stack.lambda_endpoint.url_for("ReconcileFunction")
    assert local_stack.env_for(spec)["AWS_ENDPOINT_URL_LAMBDA"] == mine
    sam = sam_env.sam_env_vars(local_stack, host="127.0.0.1")["ReconcileFunction"]["LOCAL_LAMBDA_ENDPOINT_URL"]
    assert sam == mine

