"""The created network names its egress, reaches AWS through VPC endpoints (a NAT failure takes
out no AWS API), and what holds money or evidence is retained, protected, backed up and alarmed;
every alarm has a runbook row in docs/operations.md."""

from __future__ import annotations

import re
from typing import Any

from smartpay_tools.local.template import PROJECT_ROOT, Template

T = Template()
RES: dict[str, Any] = T.resources
ENDPOINT_SERVICES = {"secretsmanager", "ssm", "sqs", "lambda", "logs", "monitoring"}


def _of_type(kind: str) -> dict[str, Any]:
    return {k: v for k, v in RES.items() if v["Type"] == kind}


def test_function_egress_is_postgres_to_the_proxy_and_https_to_endpoints_and_buffr_only() -> None:
    inline = RES["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert inline == [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": {"Ref": "BuffrApiEgressCidr"},
                       "Description": "Buffr's API (HTTPS)"}]
    extra = {k: v["Properties"] for k, v in _of_type("AWS::EC2::SecurityGroupEgress").items()
             if v["Properties"]["GroupId"] == {"Ref": "FunctionSecurityGroup"}}
    assert {(p["FromPort"], p["DestinationSecurityGroupId"]["Ref"]) for p in extra.values()} == {
        (5432, "ProxySecurityGroup"), (443, "EndpointSecurityGroup")}
    for group in ("EndpointSecurityGroup", "DatabaseSecurityGroup"):  # answer only, never call out
        assert RES[group]["Properties"]["SecurityGroupEgress"][0]["CidrIp"] == "127.0.0.1/32", group
    for logical_id, sg in _of_type("AWS::EC2::SecurityGroup").items():
        for rule in sg["Properties"].get("SecurityGroupEgress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0", logical_id


def _ingress(group: str) -> set[tuple[int, str]]:
    """(port, source group) of every rule admitting traffic into ``group``: inline and separate."""
    rules = list(RES[group]["Properties"].get("SecurityGroupIngress", []))
    rules += [v["Properties"] for v in _of_type("AWS::EC2::SecurityGroupIngress").values()
              if v["Properties"]["GroupId"] == {"Ref": group}]
    assert all(r["IpProtocol"] == "tcp" and r["FromPort"] == r["ToPort"] for r in rules), group
    return {(r["FromPort"], r["SourceSecurityGroupId"]["Ref"]) for r in rules}


def test_migrate_alone_reaches_the_cluster_besides_the_proxy() -> None:
    """The rotation's logins go to the writer itself (RDS Proxy checks a password against
    AWSCURRENT and would refuse the pending one): migrate has a group of its own that reaches the
    cluster on 5432; every other function keeps FunctionSecurityGroup, which reaches only the proxy."""
    egress = RES["MigrateSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["DestinationSecurityGroupId"]["Ref"]) for r in egress] == [
        ("tcp", 5432, 5432, "ProxySecurityGroup"), ("tcp", 5432, 5432, "DatabaseSecurityGroup"),
        ("tcp", 443, 443, "EndpointSecurityGroup")]
    assert not [v for v in _of_type("AWS::EC2::SecurityGroupEgress").values()
                if v["Properties"]["GroupId"] == {"Ref": "MigrateSecurityGroup"}]
    assert _ingress("DatabaseSecurityGroup") == {(5432, "ProxySecurityGroup"), (5432, "MigrateSecurityGroup")}
    assert _ingress("ProxySecurityGroup") == {(5432, "FunctionSecurityGroup"), (5432, "MigrateSecurityGroup")}
    assert _ingress("EndpointSecurityGroup") == {(443, "FunctionSecurityGroup"), (443, "ProxySecurityGroup"),
                                                 (443, "MigrateSecurityGroup")}
    in_vpc = {k: v["Properties"]["VpcConfig"]["Fn::If"][1]["SecurityGroupIds"]
              for k, v in _of_type("AWS::Serverless::Function").items() if "VpcConfig" in v["Properties"]}
    assert in_vpc.pop("MigrateFunction") == [{"Ref": "MigrateSecurityGroup"}]
    assert in_vpc and all(groups == [{"Ref": "FunctionSecurityGroup"}] for groups in in_vpc.values()), in_vpc
    env = RES["MigrateFunction"]["Properties"]["Environment"]["Variables"]
    assert env["DATABASE_WRITER_HOST"] == {
        "Fn::If": ["CreateDatabase", {"Fn::GetAtt": ["DatabaseCluster", "Endpoint.Address"]}, ""]}
    assert not any("DATABASE_WRITER_HOST" in v["Properties"].get("Environment", {}).get("Variables", {})
                   for k, v in _of_type("AWS::Serverless::Function").items() if k != "MigrateFunction")


def test_interface_endpoints_for_every_aws_api_the_functions_call_and_a_dynamodb_gateway() -> None:
    found = {}
    for logical_id, endpoint in _of_type("AWS::EC2::VPCEndpoint").items():
        props = endpoint["Properties"]
        assert endpoint["Condition"] == "CreateDatabase", logical_id
        service = props["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]
        found[service] = props["VpcEndpointType"]
        if props["VpcEndpointType"] == "Interface":
            assert props["PrivateDnsEnabled"] is True and props["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}]
        else:
            assert props["RouteTableIds"] == {"Ref": "PrivateRouteTableIds"}
    assert found == {**{s: "Interface" for s in ENDPOINT_SERVICES}, "dynamodb": "Gateway"}


def test_money_and_evidence_are_retained_protected_and_backed_up() -> None:
    for kind in ("AWS::Logs::LogGroup", "AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::KMS::Key"):
        for logical_id, resource in _of_type(kind).items():
            assert resource.get("DeletionPolicy") == "Retain", logical_id
            assert resource.get("UpdateReplacePolicy") == "Retain", logical_id
    for logical_id, table in _of_type("AWS::DynamoDB::Table").items():
        assert table["Properties"]["DeletionProtectionEnabled"] is True, logical_id
    selection = RES["BackupSelection"]["Properties"]["BackupSelection"]
    assert {"Fn::GetAtt": ["DisburseIdempotencyTable", "Arn"]} in selection["Resources"]
    assert {"Fn::GetAtt": ["WebhookIdempotencyTable", "Arn"]} in selection["Resources"]
    assert RES["BackupVault"]["Properties"]["EncryptionKeyArn"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    rule = RES["BackupPlan"]["Properties"]["BackupPlan"]["BackupPlanRule"][0]
    assert rule["Lifecycle"]["DeleteAfterDays"] >= 35


def test_queue_age_table_throttles_and_database_health_are_alarmed() -> None:
    alarms = {k: v["Properties"] for k, v in _of_type("AWS::CloudWatch::Alarm").items()}
    age = alarms["CycleQueueOldestMessageAlarm"]
    assert (age["MetricName"], age["Dimensions"][0]["Value"]) == (
        "ApproximateAgeOfOldestMessage", {"Fn::GetAtt": ["CycleQueue", "QueueName"]})
    for table in ("DisburseIdempotencyTable", "WebhookIdempotencyTable"):
        alarm = alarms[table.replace("Table", "ThrottlesAlarm")]
        watched = {(m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"])
                   for m in alarm["Metrics"] if "MetricStat" in m}
        assert watched == {("ReadThrottleEvents", table), ("WriteThrottleEvents", table)}
    assert alarms["DatabaseCapacityAlarm"]["MetricName"] == "ACUUtilization"
    assert alarms["DatabaseProxyBorrowLatencyAlarm"]["MetricName"] == "DatabaseConnectionsBorrowLatency"


def test_every_alarm_has_a_runbook_row() -> None:
    runbook = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    rows = set(re.findall(r"^\| `([a-z0-9-]+)`", runbook, flags=re.MULTILINE))
    rows |= {name for pair in re.findall(r"^\| `([a-z0-9-]+)` / `([a-z0-9-]+)`", runbook, flags=re.MULTILINE)
             for name in pair}
    for logical_id, alarm in _of_type("AWS::CloudWatch::Alarm").items():
        name = alarm["Properties"]["AlarmName"]["Fn::Sub"].removeprefix("smartpay-").removesuffix("-${Stage}")
        assert name in rows, f"{logical_id}: no row `{name}` in docs/operations.md's alarm table"
