"""Who may invoke the disburse function directly is decided by template.yaml, and the local runner reads
the same template: the lambda:InvokeFunction statement of reconcile's role, naming the disburse function's
exact ARN, is the only direct way in, deployed and locally."""

from __future__ import annotations

import json
from typing import Any

from smartpay_tools.local.template import Template, invoke_targets, role_invoke_targets

T = Template()
RES: dict[str, Any] = T.resources


def test_only_reconcile_may_invoke_disburse_directly() -> None:
    specs = T.functions()
    assert {k: set(s.invokes) for k, s in specs.items() if s.invokes} == {"ReconcileFunction": {"DisburseFunction"}}
    assert RES["ReconcileFunction"]["Properties"]["Environment"]["Variables"]["DISBURSE_FUNCTION_NAME"] == {
        "Ref": "DisburseFunction"}


def test_the_template_grants_lambda_invoke_no_other_way() -> None:
    """The local runner understands the roles' lambda:InvokeFunction statements on ``!GetAtt <F>.Arn``
    (and LambdaInvokePolicy entries) only; nothing else may grant an invoke (a Lambda permission, a
    managed invoke role, a wildcard), or the local runner and AWS would disagree about who may call
    disburse. The only Lambda permissions let a service, Secrets Manager, invoke migrate to rotate
    a role secret, one per secret (tests/unit/test_template_secret_rotation.py); no function is a
    principal."""
    permissions = {k: v["Properties"] for k, v in RES.items() if v["Type"] == "AWS::Lambda::Permission"}
    assert {(p["Principal"], json.dumps(p["FunctionName"]), p["SourceArn"]["Ref"]) for p in permissions.values()} == {
        ("secretsmanager.amazonaws.com", '{"Fn::GetAtt": ["MigrateFunction", "Arn"]}', f"{role}RoleSecret")
        for role in ("Beneficiaries", "Disburse", "Webhook", "Reconcile")}
    assert len(permissions) == 4
    for logical_id, resource in RES.items():
        text = json.dumps(resource.get("Properties", {}).get("Policies", []))
        assert "AWSLambdaRole" not in text and "lambda:*" not in text, logical_id
        if "lambda:InvokeFunction" in text:
            assert logical_id == "ReconcileFunctionRole", logical_id
            assert text.count("lambda:InvokeFunction") == 1 and '"Fn::GetAtt": ["DisburseFunction", "Arn"]' in text


def test_invoke_targets_reads_only_lambda_invoke_policies() -> None:
    assert invoke_targets([{"LambdaInvokePolicy": {"FunctionName": {"Ref": "A"}}},
                           {"DynamoDBCrudPolicy": {"TableName": {"Ref": "T"}}}, "AWSXrayWriteOnlyAccess"]) == {"A"}
    assert invoke_targets(None) == frozenset()
    assert role_invoke_targets([{"Effect": "Allow", "Action": "lambda:InvokeFunction",
                                 "Resource": {"Fn::GetAtt": ["A", "Arn"]}},
                                {"Effect": "Allow", "Action": ["sqs:SendMessage"],
                                 "Resource": {"Fn::GetAtt": ["Q", "Arn"]}}]) == {"A"}


def test_the_api_authorizer_is_the_authorizer_functions_published_alias_and_runs_locally() -> None:
    """SnapStart: API Gateway calls the alias (a snapshotted version); the local gateway runs the
    same function."""
    auth = RES["SmartPayApi"]["Properties"]["Auth"]["Authorizers"]["ApiKeyAuthorizer"]
    assert auth["FunctionArn"] == {"Ref": "AuthorizerFunction.Alias"}
    default, found = T.authorizers()
    assert default == "ApiKeyAuthorizer" and found["ApiKeyAuthorizer"].function == "AuthorizerFunction"
