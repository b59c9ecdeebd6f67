"""CloudFormation refuses a deploy the template's Rules reject: prod without its secrets or an
alarm address, and Stage=local anywhere (only SAM local and the local stack, which never evaluate
Rules, may run it). The Rules are evaluated here with the local resolver, as CloudFormation would."""

from __future__ import annotations

from typing import Any

import pytest

from smartpay_tools.local.template import Template

SECRET = "arn:aws:secretsmanager:af-south-1:123456789012:secret:smartpay/prod/x-AbC123"
PROD = {"Stage": "prod", "CreateDatabase": "true", "VpcId": "vpc-0123456789abcdef0",
        "PrivateSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
        "DatabaseAvailabilityZones": "af-south-1a,af-south-1b", "PrivateRouteTableIds": "rtb-0123456789abcdef0",
        "WebhookSecretArn": SECRET,
        "BuffrApiKeySecretArn": SECRET, "AlarmEmail": "oncall@example.com",
        "BuffrWebhookSourceCidrs": "203.0.113.0/24"}


def violations(**parameters: str) -> list[str]:
    """The AssertDescription of every assertion that fails for these parameter values."""
    defaults = {k: str(v.get("Default", "")) for k, v in Template().doc["Parameters"].items()}
    values: dict[str, Any] = {**defaults, **parameters}
    for name, spec in Template().doc["Parameters"].items():  # lists as CloudFormation passes them
        if spec["Type"] == "CommaDelimitedList":
            values[name] = [v for v in values[name].split(",")] if values[name] else [""]
    t = Template(parameters=values)
    failed = []
    for rule in t.doc["Rules"].values():
        if "RuleCondition" in rule and not t.resolve(rule["RuleCondition"]):
            continue
        failed += [a["AssertDescription"] for a in rule["Assertions"] if not t.resolve(a["Assert"])]
    return failed


def test_a_complete_prod_deploy_passes() -> None:
    assert violations(**PROD) == []


@pytest.mark.parametrize("missing", ["WebhookSecretArn", "BuffrApiKeySecretArn", "AlarmEmail",
                                     "BuffrWebhookSourceCidrs"])
def test_prod_without_a_secret_or_the_alarm_address_is_refused(missing: str) -> None:
    assert [v for v in violations(**{**PROD, missing: ""}) if missing in v] != []


def test_dev_may_leave_them_empty() -> None:
    assert violations(Stage="dev") == []


@pytest.mark.parametrize("stage", ["local"])
def test_stage_local_is_refused_by_cloudformation(stage: str) -> None:
    assert any("Stage=local" in v for v in violations(Stage=stage))


def test_the_created_database_needs_two_availability_zones() -> None:
    assert any("DatabaseAvailabilityZones" in v for v in violations(**{**PROD, "DatabaseAvailabilityZones": ""}))
