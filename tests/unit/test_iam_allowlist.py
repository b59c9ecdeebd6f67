"""IAM with no "*" resource except where AWS has none: the template, expanded by SAM's own
translator, grants exactly the (role, action, resource) rows of tests/unit/iam_allowlist.json.

A new permission (a resource another function must reach) is a new row in that file, reviewed
like code; a row the template does not grant must go too. Regenerate the file after a deliberate change
with ``python -m tests.unit.test_iam_allowlist`` and review its diff.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from smartpay_tools.local.template import Template

ALLOWLIST = Path(__file__).with_name("iam_allowlist.json")
#: Actions AWS offers no resource-level permission for: the only ones that may name "*".
NO_RESOURCE_LEVEL = frozenset({
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "cloudwatch:GetMetricStatistics",
    "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
    "secretsmanager:GetRandomPassword",  # migrate's rotation: a new password, tied to no secret
})
#: AWS-managed policies a role may carry: service roles only AWS services assume (account-wide
#: API Gateway logging, AWS Backup), never a function's.
MANAGED = {
    "ApiGatewayLoggingRole": ["arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"],
    "BackupRole": ["arn:${AWS::Partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
                   "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores"],
}
#: The expansion keeps every ``Fn::If`` (both branches are read), so one parameter set suffices.
PARAMETERS = {"Stage": "prod", "CreateDatabase": "true"}


def expand() -> dict[str, Any]:
    """template.yaml as CloudFormation sees it after the Serverless transform (offline)."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    doc = yaml_parse(Template().path.read_text())
    for resource in doc["Resources"].values():  # a packaged location; the code is not read
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/key"
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = "s3://bucket/key"
    os.environ.setdefault("AWS_DEFAULT_REGION", "af-south-1")
    return transform(copy.deepcopy(doc), dict(PARAMETERS), _NoManagedPolicies())


def _text(value: Any) -> str:
    """A resource as one readable string: ``!Ref X``, ``!GetAtt X.Y``, a ``!Sub`` template, ``*``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return f"!Ref {arg}"
        if key == "Fn::GetAtt":
            return f"!GetAtt {'.'.join(arg) if isinstance(arg, list) else arg}"
        if key == "Fn::Sub":
            return f"!Sub {arg if isinstance(arg, str) else json.dumps(arg, sort_keys=True)}"
    return json.dumps(value, sort_keys=True)


def _branches(value: Any) -> list[Any]:
    """Both branches of every ``Fn::If`` (a policy granted under some condition is granted)."""
    if isinstance(value, dict) and list(value) == ["Fn::If"]:
        _, yes, no = value["Fn::If"]
        return _branches(yes) + _branches(no)
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def grants(resources: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Per IAM role or policy: the sorted [action, resource] rows it allows."""
    found: dict[str, set[tuple[str, str]]] = {}
    for logical_id, resource in resources.items():
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for policy in props.get("Policies", []) for p in _branches(policy)]
        elif kind in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            documents = [props["PolicyDocument"]]
        else:
            continue
        rows = found.setdefault(logical_id, set())
        for document in documents:
            for statement in document["Statement"]:
                assert statement["Effect"] == "Allow", f"{logical_id}: a Deny belongs in a review, not here"
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                targets = [r for value in _branches(statement["Resource"]) for r in
                           (value if isinstance(value, list) else [value])]
                rows.update((action, _text(target)) for action in actions for target in targets)
    return {k: sorted([list(r) for r in v]) for k, v in sorted(found.items())}


@pytest.fixture(scope="module")
def expanded() -> dict[str, Any]:
    return expand()["Resources"]


def test_every_grant_is_in_the_checked_in_allow_list(expanded: dict[str, Any]) -> None:
    allowed = json.loads(ALLOWLIST.read_text())
    actual = grants(expanded)
    for role in sorted(set(actual) | set(allowed)):
        new = [r for r in actual.get(role, []) if r not in allowed.get(role, [])]
        gone = [r for r in allowed.get(role, []) if r not in actual.get(role, [])]
        assert not new, f"{role} grants rows not in {ALLOWLIST.name} (review, then add them): {new}"
        assert not gone, f"{role}: rows of {ALLOWLIST.name} the template does not grant (remove them): {gone}"


def test_star_only_where_aws_has_no_resource_level_permission(expanded: dict[str, Any]) -> None:
    for role, rows in grants(expanded).items():
        for action, resource in rows:
            assert "*" not in action, f"{role}: wildcard action {action}"
            if resource == "*":
                assert action in NO_RESOURCE_LEVEL, f"{role}: {action} on * (name the resource)"


def test_no_managed_policy_but_the_api_gateway_logging_role(expanded: dict[str, Any]) -> None:
    """SAM's generated roles would carry AWSLambdaBasicExecutionRole (logs:* on *) and the SQS
    event's AWSLambdaSQSQueueExecutionRole (every queue of the account): every function names its
    own role instead."""
    for logical_id, resource in expanded.items():
        if resource["Type"] == "AWS::IAM::Role":
            arns = [_text(a).removeprefix("!Sub ") for a in resource["Properties"].get("ManagedPolicyArns", [])]
            assert arns == MANAGED.get(logical_id, []), logical_id
        if resource["Type"] == "AWS::Lambda::Function":
            role = resource["Properties"]["Role"]
            assert role == {"Fn::GetAtt": [f"{logical_id}Role", "Arn"]}, logical_id


def test_key_policies_name_the_account_and_services_never_anyone(expanded: dict[str, Any]) -> None:
    keys = {k: v for k, v in expanded.items() if v["Type"] == "AWS::KMS::Key"}
    assert set(keys) == {"DataKey", "LogsKey", "QueueKey"}
    for logical_id, key in keys.items():
        assert key["Properties"]["EnableKeyRotation"] is True, logical_id
        for statement in key["Properties"]["KeyPolicy"]["Statement"]:
            principal = statement["Principal"]
            assert principal != "*" and principal.get("AWS") != "*", logical_id
            if "Service" in principal:
                assert "Condition" in statement, f"{logical_id}: a service principal is scoped to this account"


def dump(rows: dict[str, list[list[str]]]) -> str:
    """One row per line, so a merge or a review sees exactly which grants changed."""
    blocks = [f"  {json.dumps(role)}: [" + ",".join(f"\n    {json.dumps(r)}" for r in items) + ("\n  ]" if items else "]")
              for role, items in rows.items()]
    return "{\n" + ",\n".join(blocks) + "\n}\n"


if __name__ == "__main__":  # regenerate the allow-list after a reviewed change
    ALLOWLIST.write_text(dump(grants(expand()["Resources"])))
    print(f"wrote {ALLOWLIST}")
