"""template.yaml keeps its production properties: alarms, log retention, no embedded secrets,
PII-free access logs, per-principal usage plans, VPC and created database only under CreateDatabase,
and every function's database secret wired from a parameter or a secret the stack creates."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from smartpay import access, auth
from smartpay_tools.local.template import Template

T = Template()
RES: dict[str, Any] = T.resources
FUNCTIONS = sorted(k for k, v in RES.items() if v["Type"] == "AWS::Serverless::Function")
ALARMS = {k: v["Properties"] for k, v in RES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
NO_VALUE = {"Ref": "AWS::NoValue"}


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in RES.items() if v["Type"] == kind}


def _env(logical_id: str) -> dict[str, Any]:
    return RES[logical_id]["Properties"].get("Environment", {}).get("Variables", {})


def _alarm_for(metric: str, namespace: str, dimensions: dict[str, Any]) -> list[str]:
    return [name for name, a in ALARMS.items()
            if a.get("MetricName") == metric and a.get("Namespace") == namespace
            and {d["Name"]: d["Value"] for d in a.get("Dimensions", [])} == dimensions]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_every_function_has_errors_and_throttles_alarms(function: str, metric: str) -> None:
    assert _alarm_for(metric, "AWS/Lambda", {"FunctionName": {"Ref": function}}), f"{function}: no {metric} alarm"


def test_every_alarm_notifies_the_alarm_topic() -> None:
    assert RES["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    subscription = RES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail" and subscription["Properties"]["Protocol"] == "email"
    for name, alarm in ALARMS.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["TreatMissingData"] == "notBreaching", name


@pytest.mark.parametrize("metric, service", [
    ("DisbursementsFailed", "disburse"),
    ("WebhookSignatureRejected", "webhook"),
    ("WebhookRejected", "webhook"),
    ("ReconciliationFlagged", "reconcile"),
    ("DatabaseLoginRotationFailed", "migrate"),
])
def test_business_alarms_watch_the_metrics_the_functions_emit(metric: str, service: str) -> None:
    # Powertools Metrics adds the dimension service=<POWERTOOLS_SERVICE_NAME> to every EMF metric.
    assert _alarm_for(metric, "KetchupSmartPay", {"service": service}), metric
    function = next(f for f in FUNCTIONS if _env(f).get("POWERTOOLS_SERVICE_NAME") == service)
    code = "".join(p.read_text() for p in (T.path.parent / RES[function]["Properties"]["CodeUri"]).rglob("*.py"))
    assert f'"{metric}"' in code, f"{function} no longer emits {metric}"


def test_reconciliation_discrepancies_alarm_watches_the_emitted_metric() -> None:
    assert _alarm_for("ReconciliationDiscrepancies", "KetchupSmartPay", {"service": "reconcile"})
    code = (T.path.parent / "functions/reconcile/reconcile/service.py").read_text()
    assert '"ReconciliationDiscrepancies"' in code and _env("ReconcileFunction")["POWERTOOLS_SERVICE_NAME"] == "reconcile"


def test_failed_scheduled_reconciliations_land_in_an_alarmed_queue() -> None:
    props = RES["ReconcileFunction"]["Properties"]
    queue_arn = {"Fn::GetAtt": ["ReconcileDeadLetterQueue", "Arn"]}
    assert props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": queue_arn}
    schedules = [e["Properties"] for e in props["Events"].values() if e["Type"] == "Schedule"]
    assert schedules and all(s["DeadLetterConfig"] == {"Arn": queue_arn} for s in schedules)
    statement = RES["ReconcileDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Resource"] == queue_arn
    depth = _alarm_for("ApproximateNumberOfMessagesVisible", "AWS/SQS",
                       {"QueueName": {"Fn::GetAtt": ["ReconcileDeadLetterQueue", "QueueName"]}})
    assert depth and ALARMS[depth[0]]["Threshold"] == 0


def test_api_5xx_alarm_names_the_api_and_stage() -> None:
    api = RES["SmartPayApi"]["Properties"]
    assert _alarm_for("5XXError", "AWS/ApiGateway", {"ApiName": api["Name"], "Stage": {"Ref": "Stage"}})


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_has_a_log_group_with_retention(function: str) -> None:
    groups = [g["Properties"] for g in _of_type("AWS::Logs::LogGroup").values()
              if g["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}]
    assert len(groups) == 1 and groups[0]["RetentionInDays"] > 0, function


SECRET_VALUE = re.compile(r"whsec_|sk_live|-----BEGIN|postgres(ql)?://[^@/\s]*:[^@/\s]*@|local-\w+-key|"
                          r"^[A-Za-z0-9+/=_-]{32,}$")


def test_no_parameter_embeds_a_secret() -> None:
    for name, spec in T.doc["Parameters"].items():
        default = str(spec.get("Default", ""))
        assert not SECRET_VALUE.search(default), f"{name} has a secret-looking Default"
        if re.search(r"secret|password|token|key", name, re.I):
            # Only references: a Secrets Manager ARN or an SSM parameter name, never the value.
            assert re.search(r"(SecretArn|ParameterName)$", name), f"{name}: pass secrets by ARN or name"
            assert default == "" or default.startswith("/"), name


def test_no_secret_literal_anywhere_in_the_template() -> None:
    text = T.path.read_text()
    # (descriptions may *mention* "whsec_<base64>" or "a postgresql:// URL"; no actual value)
    assert not re.search(r"whsec_[A-Za-z0-9+/]{16,}|-----BEGIN|postgres(ql)?://[^\s@/]*:[^\s@/]*@|local-\w+-key",
                         text)
    for logical_id in FUNCTIONS:  # secrets reach functions only as *_SECRET / *_PARAMETER names
        for key, value in _env(logical_id).items():
            if key in {"DATABASE_URL", "BUFFR_API_KEY", "WEBHOOK_SECRET", "API_KEYS"}:
                assert value == "", f"{logical_id}.{key} must stay empty in the template"


def test_access_log_format_has_no_path_headers_or_body() -> None:
    api = RES["SmartPayApi"]["Properties"]
    setting = api["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fmt = setting["Format"]
    assert "\n" not in fmt and json.loads(fmt.replace("$context", "x"))  # one JSON line
    assert "$context.resourcePath" in fmt
    for forbidden in ("$context.path", "$input", "$method.request", "$context.identity.apiKey\"",
                      "$context.requestOverride", "$context.responseOverride", "$stageVariables", "$util"):
        assert forbidden not in fmt, forbidden
    assert RES["ApiAccessLogGroup"]["Properties"]["RetentionInDays"] > 0


def test_usage_plans_per_principal_and_webhook_needs_no_key() -> None:
    api = RES["SmartPayApi"]["Properties"]
    assert api["ApiKeySourceType"] == "AUTHORIZER" and api["Auth"]["ApiKeyRequired"] is True
    assert api["MethodSettings"][0]["ThrottlingRateLimit"] > 0  # stage-wide backstop stays
    plans = _of_type("AWS::ApiGateway::UsagePlan")
    assert {p["Properties"]["UsagePlanName"]["Fn::Sub"].split("-")[1] for p in plans.values()} == set(auth.PRINCIPALS)
    for name, plan in plans.items():
        props = plan["Properties"]
        assert props["Throttle"]["RateLimit"] and props["Throttle"]["BurstLimit"], name
        assert props["ApiStages"] == [{"ApiId": {"Ref": "SmartPayApi"}, "Stage": {"Ref": "SmartPayApi.Stage"}}]
        keys = [k for k in _of_type("AWS::ApiGateway::UsagePlanKey").values()
                if k["Properties"]["UsagePlanId"] == {"Ref": name}]
        assert len(keys) == 1, name
    assert plans["BuffrUsagePlan"]["Properties"]["Quota"]["Period"] == "DAY"
    webhook = RES["WebhookFunction"]["Properties"]["Events"]["BuffrWebhook"]["Properties"]["Auth"]
    assert webhook == {"Authorizer": "NONE", "ApiKeyRequired": False}


def test_vpc_only_under_create_database_or_a_named_network() -> None:
    for logical_id in FUNCTIONS:
        vpc = RES[logical_id]["Properties"].get("VpcConfig")
        if vpc is None:
            assert "DATABASE_URL" not in _env(logical_id), f"{logical_id} uses the database but is never in the VPC"
            continue
        cond, yes, no = vpc["Fn::If"]
        assert cond == "CreateDatabase", logical_id
        # migrate's own group also reaches the cluster (test_template_network_alarms.py)
        own = "MigrateSecurityGroup" if logical_id == "MigrateFunction" else "FunctionSecurityGroup"
        assert yes["SecurityGroupIds"] == [{"Ref": own}], logical_id
        # CreateDatabase=false: the VPC the deployer names (FunctionSubnetIds), else none.
        assert no == {"Fn::If": ["UsesExistingNetwork",
                                 {"SecurityGroupIds": {"Ref": "FunctionSecurityGroupIds"},
                                  "SubnetIds": {"Ref": "FunctionSubnetIds"}}, NO_VALUE]}, logical_id
    kinds = ("AWS::EC2::", "AWS::RDS::", "AWS::SecretsManager::")
    for logical_id, resource in RES.items():
        if resource["Type"].startswith(kinds) or logical_id == "DatabaseProxyRole":
            assert resource.get("Condition") == "CreateDatabase", logical_id
    off, on = Template(parameters={"CreateDatabase": "false"}), Template(parameters={"CreateDatabase": "true"})
    assert all(off.resolve(RES[f]["Properties"].get("VpcConfig")) is None for f in FUNCTIONS)
    assert any(on.resolve(RES[f]["Properties"].get("VpcConfig")) for f in FUNCTIONS)


def test_created_database_is_aurora_serverless_v2_behind_a_tls_proxy() -> None:
    cluster = RES["DatabaseCluster"]["Properties"]
    assert cluster["Engine"] == "aurora-postgresql" and cluster["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in cluster and cluster["StorageEncrypted"] is True
    assert set(cluster["ServerlessV2ScalingConfiguration"]) == {"MinCapacity", "MaxCapacity"}
    assert RES["DatabaseInstance"]["Properties"]["DBInstanceClass"] == "db.serverless"
    proxy = RES["DatabaseProxy"]["Properties"]
    assert proxy["RequireTLS"] is True and proxy["DebugLogging"] is False
    assert RES["DatabaseProxyTargetGroup"]["Properties"]["DBClusterIdentifiers"] == [{"Ref": "DatabaseCluster"}]


def test_every_function_database_secret_comes_from_a_parameter_or_a_created_secret() -> None:
    params = T.doc["Parameters"]
    proxy_secrets = [a["SecretArn"] for a in RES["DatabaseProxy"]["Properties"]["Auth"]]
    role_secrets: dict[str, Any] = {}
    for logical_id in FUNCTIONS:
        env = _env(logical_id)
        if "DATABASE_URL_SECRET" not in env:
            continue
        cond, created, given = env["DATABASE_URL_SECRET"]["Fn::If"]
        assert cond == "CreateDatabase" and given["Ref"] in params and params[given["Ref"]]["Default"] == ""
        assert env["DATABASE_HOST"] == {"Fn::If": ["CreateDatabase", {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}, ""]}
        role = env.get("DB_ROLE")
        if role is None:  # the schema owner (migrate): the cluster's RDS-managed master secret
            assert created == {"Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]}, logical_id
        else:
            secret = RES[created["Ref"]]
            assert secret["Type"] == "AWS::SecretsManager::Secret", logical_id
            template = json.loads(secret["Properties"]["GenerateSecretString"]["SecretStringTemplate"])
            assert template["username"] == role and "password" not in template, logical_id
            role_secrets[role] = created
        assert created in proxy_secrets, f"{logical_id}: the proxy must accept its secret"
        policies = json.dumps(RES[RES[logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]["Policies"])
        assert json.dumps(created) in policies and json.dumps(given) in policies, f"{logical_id} may not read it"
    assert set(role_secrets) <= access.ROLE_NAMES and len(proxy_secrets) == len(role_secrets) + 1
    # migrate sets every created role's password: ROLE_SECRETS maps each role to its secret.
    on = Template(parameters={"CreateDatabase": "true"})
    mapping = json.loads(on.resolve(_env("MigrateFunction")["ROLE_SECRETS"]))
    assert mapping == {role: on.resolve(ref) for role, ref in role_secrets.items()}
    assert Template(parameters={"CreateDatabase": "false"}).functions()["MigrateFunction"].environment[
        "ROLE_SECRETS"] == ""


def test_outputs_name_everything_an_operator_needs() -> None:
    outputs = T.doc["Outputs"]
    values = [json.dumps(o["Value"]) for o in outputs.values()]
    for logical_id in [*FUNCTIONS, *_of_type("AWS::DynamoDB::Table"), "AlarmTopic", "ApiAccessLogGroup"]:
        assert json.dumps({"Ref": logical_id}) in values, f"no output for {logical_id}"
    assert "SmartPayApi" in json.dumps(outputs["ApiUrl"])
    for name in ("DatabaseProxyEndpoint", "DatabaseClusterEndpoint", "DatabaseMasterSecretArn"):
        assert outputs[name]["Condition"] == "CreateDatabase", name


@pytest.mark.parametrize("env", ["default", "dev", "prod"])
def test_samconfig_environments_name_only_template_parameters(env: str) -> None:
    import shlex
    import tomllib

    config = tomllib.loads((T.path.parent / "samconfig.toml").read_text())
    overrides = config[env]["deploy"]["parameters"]["parameter_overrides"]
    pairs = dict(item.split("=", 1) for item in (shlex.split(overrides) if isinstance(overrides, str) else overrides))
    assert set(pairs) <= set(T.doc["Parameters"]), set(pairs) - set(T.doc["Parameters"])
    required = {name for name, spec in T.doc["Parameters"].items() if "Default" not in spec}
    assert required <= set(pairs), f"{env} must state {required - set(pairs)}"
    assert not any(SECRET_VALUE.search(value) for value in pairs.values())
    if env == "prod":
        assert pairs["Stage"] == "prod" and pairs["CreateDatabase"] == "true" and "AlarmEmail" in pairs
