"""template.yaml rotates every function role's secret with the migrate function: one schedule per
secret of ROLE_SECRETS (never on create or update: the roles exist only after migrate ran), one
Lambda permission per secret for Secrets Manager of this account rotating exactly that secret,
and the migrate role may rotate exactly those four secrets."""

from __future__ import annotations

import json
import re
from typing import Any

from smartpay import access
from smartpay_tools.local.template import Template

T = Template()
RES: dict[str, Any] = T.resources
ROTATE_ACTIONS = {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue",
                  "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"}


def _role_secrets() -> dict[str, str]:
    """ROLE_SECRETS of the migrate function: role -> logical id of its secret."""
    condition, created, _ = RES["MigrateFunction"]["Properties"]["Environment"]["Variables"]["ROLE_SECRETS"]["Fn::If"]
    assert condition == "CreateDatabase"
    text = re.sub(r"\$\{(\w+)\}", r"\1", created["Fn::Sub"])
    return dict(json.loads(text))


def _policy(name: str) -> dict[str, Any]:
    for policy in RES["MigrateFunctionRole"]["Properties"]["Policies"]:
        body = policy["Fn::If"][1] if "Fn::If" in policy else policy
        if body.get("PolicyName") == name:
            return dict(body["PolicyDocument"])
    raise AssertionError(f"no policy {name}")


def test_role_secrets_are_the_four_function_roles() -> None:
    mapping = _role_secrets()
    assert set(mapping) == {"smartpay_beneficiaries", "smartpay_disburse", "smartpay_webhook", "smartpay_reconcile"}
    assert set(mapping) <= access.ROLE_NAMES
    assert all(RES[secret]["Type"] == "AWS::SecretsManager::Secret" for secret in mapping.values())


def test_each_role_secret_has_one_schedule_that_invokes_migrate() -> None:
    schedules = {k: v for k, v in RES.items() if v["Type"] == "AWS::SecretsManager::RotationSchedule"}
    by_secret = {v["Properties"]["SecretId"]["Ref"]: v for v in schedules.values()}
    assert len(by_secret) == len(schedules) == 4
    assert set(by_secret) == set(_role_secrets().values())
    for schedule in by_secret.values():
        props = schedule["Properties"]
        assert schedule["Condition"] == "CreateDatabase"
        # its own secret's permission exists first (the schedule's first rotation would be refused)
        assert RES[schedule["DependsOn"]]["Properties"]["SourceArn"] == props["SecretId"]
        assert props["RotationLambdaARN"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
        assert props["RotateImmediatelyOnUpdate"] is False
        assert props["RotationRules"] == {"AutomaticallyAfterDays": {"Ref": "DatabaseLoginRotationDays"}}
    days = T.doc["Parameters"]["DatabaseLoginRotationDays"]
    assert (days["Default"], days["MinValue"], days["MaxValue"]) == (30, 1, 365)


def test_only_secrets_manager_rotating_a_role_secret_may_invoke_migrate() -> None:
    """One permission per role secret, each naming that secret's ARN (SourceArn) and this account:
    Secrets Manager may invoke migrate to rotate those four secrets and no other (confused deputy)."""
    permissions = {k: v for k, v in RES.items() if v["Type"] == "AWS::Lambda::Permission"
                   and v["Properties"]["FunctionName"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}}
    by_secret = {p["Properties"]["SourceArn"]["Ref"]: p for p in permissions.values()}
    assert len(by_secret) == len(permissions) == 4
    assert set(by_secret) == set(_role_secrets().values())
    for secret, permission in by_secret.items():
        assert permission["Condition"] == "CreateDatabase"
        assert permission["Properties"] == {
            "FunctionName": {"Fn::GetAtt": ["MigrateFunction", "Arn"]}, "Action": "lambda:InvokeFunction",
            "Principal": "secretsmanager.amazonaws.com", "SourceAccount": {"Ref": "AWS::AccountId"},
            "SourceArn": {"Ref": secret}}


def test_migrate_rotates_exactly_the_four_role_secrets() -> None:
    rotate, random = _policy("rotate-role-secrets")["Statement"]
    assert set(rotate["Action"]) == ROTATE_ACTIONS
    assert sorted(r["Ref"] for r in rotate["Resource"]) == sorted(_role_secrets().values())
    assert (random["Action"], random["Resource"]) == ("secretsmanager:GetRandomPassword", "*")
    kms = _policy("decrypt-created-secrets")["Statement"]
    assert [(set(s["Action"]), s["Resource"]) for s in kms] == [
        ({"kms:Decrypt", "kms:GenerateDataKey"}, {"Fn::GetAtt": ["DataKey", "Arn"]})]
    assert kms[0]["Condition"]["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}
