"""`smartpay invoke --stack`: names from the stack outputs, invocation through the Lambda API."""

import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from smartpay_tools.cli.deployed import DeployedStack


@pytest.fixture()
def clients(aws_env):
    cfn, lam = boto3.client("cloudformation"), boto3.client("lambda")
    with Stubber(cfn) as cfn_stub, Stubber(lam) as lam_stub:
        cfn_stub.add_response("describe_stacks", {"Stacks": [{
            "StackName": "smartpay-prod", "CreationTime": "2026-11-01T00:00:00Z", "StackStatus": "UPDATE_COMPLETE",
            "Outputs": [{"OutputKey": "ReconcileFunctionName", "OutputValue": "smartpay-reconcile-prod"},
                        {"OutputKey": "ApiUrl", "OutputValue": "https://x.execute-api/prod"}]}]},
            {"StackName": "smartpay-prod"})
        yield cfn, lam, lam_stub


def _payload(data: dict) -> StreamingBody:
    raw = json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_invoke_uses_the_function_name_from_the_outputs(clients) -> None:
    cfn, lam, stub = clients
    event = {"mode": "full"}
    stub.add_response("invoke", {"StatusCode": 200, "Payload": _payload({"run_id": "r1", "remaining": 0})},
                      {"FunctionName": "smartpay-reconcile-prod", "InvocationType": "RequestResponse",
                       "LogType": "Tail", "Payload": json.dumps(event).encode()})
    deployed = DeployedStack.load("smartpay-prod", client=cfn)
    ok, payload, _ = deployed.invoke("ReconcileFunction", event, client=lam)
    assert ok and payload == {"run_id": "r1", "remaining": 0}


def test_function_error_is_reported_as_not_ok(clients) -> None:
    cfn, lam, stub = clients
    stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                                 "Payload": _payload({"errorMessage": "boom"})})
    ok, payload, _ = DeployedStack.load("smartpay-prod", client=cfn).invoke("ReconcileFunction", {}, client=lam)
    assert not ok and payload["errorMessage"] == "boom"


def test_missing_output_names_what_exists(clients) -> None:
    cfn, _, _ = clients
    with pytest.raises(KeyError, match="ApiUrl"):
        DeployedStack.load("smartpay-prod", client=cfn).function_name("NopeFunction")
