"""template.yaml's blast radius: reserved concurrency, the optional webhook WAF, one idempotency table
per function with item-level actions only, the network for an existing database, TLS and tracing
settings, key revocation bounds, https for Buffr, and placeholders a deploy rejects."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from typing import Any

import pytest

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.local.template import Template

T = Template()
RES: dict[str, Any] = T.resources
PARAMS: dict[str, Any] = T.doc["Parameters"]
FUNCTIONS = sorted(k for k, v in RES.items() if v["Type"] == "AWS::Serverless::Function")
NO_VALUE = {"Ref": "AWS::NoValue"}
WEBHOOK_PATH = RES["WebhookFunction"]["Properties"]["Events"]["BuffrWebhook"]["Properties"]["Path"]
ITEM_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


def _env(logical_id: str) -> dict[str, Any]:
    return RES[logical_id]["Properties"].get("Environment", {}).get("Variables", {})


def _globals_env() -> dict[str, Any]:
    return T.doc["Globals"]["Function"]["Environment"]["Variables"]


def _allowed(parameter: str, value: str) -> bool:
    """CloudFormation's AllowedPattern check (whole value; each item of a CommaDelimitedList)."""
    spec = PARAMS[parameter]
    items = value.split(",") if spec["Type"] == "CommaDelimitedList" else [value]
    pattern = spec.get("AllowedPattern")
    return pattern is None or all(re.fullmatch(pattern, item) for item in items)


def _samconfig_overrides(env: str) -> dict[str, str]:
    config = tomllib.loads((PROJECT_ROOT / "samconfig.toml").read_text())
    overrides = config[env]["deploy"]["parameters"]["parameter_overrides"]
    items = shlex.split(overrides) if isinstance(overrides, str) else overrides
    return {k: v.strip('"') for k, v in (item.split("=", 1) for item in items)}


# --- 1. blast radius ----------------------------------------------------------------------------
RESERVED = {"WebhookFunction": "Webhook", "AuthorizerFunction": "Authorizer",
            "DisburseFunction": "Disburse", "ReconcileFunction": "Reconcile"}


@pytest.mark.parametrize("function, prefix", RESERVED.items())
def test_reserved_concurrency_is_a_parameter_with_an_off_switch(function: str, prefix: str) -> None:
    parameter = f"{prefix}ReservedConcurrency"
    assert RES[function]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": [f"Reserve{prefix}Concurrency", {"Ref": parameter}, NO_VALUE]}
    assert T.doc["Conditions"][f"Reserve{prefix}Concurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, -1]}]}
    spec = PARAMS[parameter]
    assert spec["Type"] == "Number" and spec["MinValue"] == -1 and spec["Default"] > 0
    assert Template(parameters={parameter: "-1"}).resolve(RES[function]["Properties"]["ReservedConcurrentExecutions"]) \
        is None
    assert int(T.resolve(RES[function]["Properties"]["ReservedConcurrentExecutions"])) == spec["Default"]


def test_default_reservations_leave_the_account_its_unreserved_minimum() -> None:
    # Lambda keeps 100 of an account's concurrency (default 1,000) unreserved.
    assert sum(PARAMS[f"{p}ReservedConcurrency"]["Default"] for p in RESERVED.values()) <= 1000 - 100
    # The open webhook route cannot take more than its share: it is capped below the whole account.
    assert PARAMS["WebhookReservedConcurrency"]["Default"] < PARAMS["DisburseReservedConcurrency"]["Default"] * 2


CIDRS = "203.0.113.0/24,198.51.100.7/32"
NOT_BUFFR = {"NotStatement": {"Statement": {"IPSetReferenceStatement": {
    "Arn": T.resolve({"Fn::GetAtt": ["BuffrWebhookIpSet", "Arn"]})}}}}


def _rules(**parameters: str) -> dict[str, dict[str, Any]]:
    template = Template(parameters=parameters)
    return {r["Name"]: r for r in template.resolve(RES["StageWebAcl"]["Properties"]["Rules"])}


def _path_match(statement: dict[str, Any]) -> dict[str, Any]:
    match = statement["ByteMatchStatement"]
    assert match["FieldToMatch"] == {"UriPath": {}} and match["SearchString"] == WEBHOOK_PATH
    return match


def test_one_web_acl_guards_the_whole_stage_with_aws_managed_groups_and_a_rate_per_ip() -> None:
    acl = RES["StageWebAcl"]
    assert "Condition" not in acl and "Condition" not in RES["StageWebAclAssociation"]
    assert "${SmartPayApi.Stage}" in RES["StageWebAclAssociation"]["Properties"]["ResourceArn"]["Fn::Sub"]
    props = acl["Properties"]
    assert props["DefaultAction"] == {"Allow": {}} and props["Scope"] == "REGIONAL"
    assert props["VisibilityConfig"]["SampledRequestsEnabled"] is False  # samples would keep bodies (PII)
    rules = _rules()
    assert list(rules) == ["aws-ip-reputation", "aws-known-bad-inputs", "rate-per-ip"]
    groups = [rules[n]["Statement"]["ManagedRuleGroupStatement"] for n in ("aws-ip-reputation", "aws-known-bad-inputs")]
    assert [(g["VendorName"], g["Name"]) for g in groups] == [
        ("AWS", "AWSManagedRulesAmazonIpReputationList"), ("AWS", "AWSManagedRulesKnownBadInputsRuleSet")]
    rate = rules["rate-per-ip"]["Statement"]["RateBasedStatement"]
    assert rate["Limit"] == str(PARAMS["ApiRateLimitPerIp"]["Default"]) and rate["AggregateKeyType"] == "IP"
    assert rate.get("ScopeDownStatement") is None  # no Buffr ranges given (dev): everyone is rate limited
    for rule in T.resolve(props["Rules"]):
        assert rule["VisibilityConfig"]["SampledRequestsEnabled"] is False, rule["Name"]


def test_buffrs_ranges_are_exempt_from_every_rate_rule_and_alone_may_send_webhooks() -> None:
    rules = _rules(BuffrWebhookSourceCidrs=CIDRS, WebhookRateLimit="500")
    assert list(rules) == ["aws-ip-reputation", "aws-known-bad-inputs", "webhook-from-buffr-only", "rate-per-ip",
                           "webhook-rate-per-ip"]
    assert rules["rate-per-ip"]["Statement"]["RateBasedStatement"]["ScopeDownStatement"] == NOT_BUFFR
    webhook_rate = rules["webhook-rate-per-ip"]["Statement"]["RateBasedStatement"]
    on_path, not_buffr = webhook_rate["ScopeDownStatement"]["AndStatement"]["Statements"]
    _path_match(on_path)
    assert not_buffr == NOT_BUFFR and webhook_rate["Limit"] == "500"
    on_path, not_buffr = rules["webhook-from-buffr-only"]["Statement"]["AndStatement"]["Statements"]
    _path_match(on_path)
    assert not_buffr == NOT_BUFFR and rules["webhook-from-buffr-only"]["Action"] == {"Block": {}}
    assert RES["BuffrWebhookIpSet"]["Properties"]["Addresses"] == {"Ref": "BuffrWebhookSourceCidrs"}
    # A webhook rate without Buffr's ranges would block Buffr itself: the rule needs them.
    assert "webhook-rate-per-ip" not in _rules(WebhookRateLimit="500")


def test_blocked_requests_are_alarmed() -> None:
    alarm = RES["WafBlockedRequestsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/WAFV2", "BlockedRequests")
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
        "WebACL": {"Fn::Sub": "smartpay-${Stage}"}, "Region": {"Ref": "AWS::Region"}, "Rule": "ALL"}
    assert T.resolve(RES["StageWebAcl"]["Properties"]["Name"]) == T.resolve(alarm["Dimensions"][0]["Value"])


@pytest.mark.parametrize("value, ok", [("203.0.113.0/24", True), ("198.51.100.7/32", True), ("", True),
                                       ("203.0.113.0", False), ("REPLACE_ME_BUFFR_CIDRS", False)])
def test_buffr_source_cidrs_pattern(value: str, ok: bool) -> None:
    assert _allowed("BuffrWebhookSourceCidrs", value) is ok


# --- 2. DynamoDB least privilege -----------------------------------------------------------------
def _policies(function: str) -> list[Any]:
    """The policies of the function's own IAM role (``Role: !GetAtt <Role>.Arn``)."""
    return RES[RES[function]["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"].get("Policies", [])


def _dynamodb_statements(function: str) -> list[dict[str, Any]]:
    """Its DynamoDB statements but the rate budget's (test_template_cycle_queue.py checks that one)."""
    found = []
    for policy in _policies(function):
        document = policy.get("PolicyDocument", {}) if isinstance(policy, dict) else {}
        for statement in document.get("Statement", []):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if any(a.startswith("dynamodb:") for a in actions) and statement.get("Sid") != "BuffrRateBudget":
                found.append(statement)
    return found


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_may_touch_only_items_of_its_own_idempotency_table(function: str) -> None:
    policies = json.dumps(_policies(function))
    assert "DynamoDBCrudPolicy" not in policies and "DynamoDBReadPolicy" not in policies
    assert not re.search(r"dynamodb:(Scan|Query|Batch\w*|\*)", policies), function
    table = _env(function).get("IDEMPOTENCY_TABLE")
    statements = _dynamodb_statements(function)
    if table is None:
        assert statements == [], f"{function} has DynamoDB access but no idempotency table"
        return
    assert len(statements) == 1 and set(statements[0]["Action"]) == ITEM_ACTIONS
    assert statements[0]["Effect"] == "Allow" and "Condition" not in statements[0]
    assert statements[0]["Resource"] == {"Fn::GetAtt": [table["Ref"], "Arn"]}  # its own table, no index


def test_no_two_functions_share_an_idempotency_table_and_every_user_has_one() -> None:
    tables = {f: _env(f)["IDEMPOTENCY_TABLE"]["Ref"] for f in FUNCTIONS if "IDEMPOTENCY_TABLE" in _env(f)}
    assert len(set(tables.values())) == len(tables)
    assert set(tables.values()) == {k for k, v in RES.items()
                                    if v["Type"] == "AWS::DynamoDB::Table" and k != "RateBudgetTable"}
    for function in FUNCTIONS:  # a function whose code runs Powertools idempotency has a table
        code_dir = PROJECT_ROOT / RES[function]["Properties"]["CodeUri"]
        code = "".join(p.read_text() for p in code_dir.rglob("*.py"))
        assert ("idempotency.run(" in code) == (function in tables), function
    for logical_id in tables.values():
        props = RES[logical_id]["Properties"]
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
        assert props["SSESpecification"]["SSEEnabled"] and RES[logical_id]["DeletionPolicy"] == "Retain"


# --- 3. network and TLS -------------------------------------------------------------------------
def test_existing_database_network_rules() -> None:
    rules = T.doc["Rules"]
    assert rules["ExistingNetworkIsComplete"]["RuleCondition"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "FunctionSubnetIds"}]}, ""]}]}
    prod = rules["ProdFunctionsInAVpc"]
    assert prod["RuleCondition"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}
    network = Template(parameters={"FunctionSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
                                   "FunctionSecurityGroupIds": "sg-0123456789abcdef0"})
    vpc = network.resolve(RES["WebhookFunction"]["Properties"]["VpcConfig"])
    # (the local resolver keeps a CommaDelimitedList as its text)
    assert vpc == {"SecurityGroupIds": "sg-0123456789abcdef0",
                   "SubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1"}
    assert T.resolve(RES["WebhookFunction"]["Properties"]["VpcConfig"]) is None  # dev default: no VPC
    for name, good, bad in (("FunctionSubnetIds", "subnet-0123456789abcdef0", "subnet-REPLACE_ME_A"),
                            ("FunctionSecurityGroupIds", "sg-01234567", "sg-REPLACE_ME"),
                            ("PrivateSubnetIds", "subnet-01234567", "subnet-REPLACE_ME_A")):
        assert _allowed(name, good) and not _allowed(name, bad), name


def test_every_function_verifies_the_database_certificate_unless_the_env_file_says_local() -> None:
    assert _globals_env()["DATABASE_SSLMODE"] == "verify-full"
    assert not any("DATABASE_SSLMODE" in _env(f) for f in FUNCTIONS)  # no function overrides it
    env_file = json.loads((PROJECT_ROOT / "env.local.json").read_text())
    assert env_file["Parameters"]["STAGE"] == "local" and env_file["Parameters"]["DATABASE_SSLMODE"] == "disable"
    layer = PROJECT_ROOT / RES["CoreLayer"]["Properties"]["ContentUri"]
    assert (layer / "smartpay/certs/rds-ca-bundle.pem").read_text().count("BEGIN CERTIFICATE") > 50
    assert RES["DatabaseProxy"]["Properties"]["RequireTLS"] is True


# --- 4. keys ------------------------------------------------------------------------------------
def test_a_revoked_key_stops_working_within_a_minute_by_default() -> None:
    ttl, store = PARAMS["AuthorizerTtlSeconds"], PARAMS["AuthorizerStoreMaxAgeSeconds"]
    assert ttl["Default"] + store["Default"] <= 60 and ttl["MaxValue"] <= 60 and store["MaxValue"] <= 60
    identity = RES["SmartPayApi"]["Properties"]["Auth"]["Authorizers"]["ApiKeyAuthorizer"]["Identity"]
    assert identity["ReauthorizeEvery"] == {"Ref": "AuthorizerTtlSeconds"}
    assert _env("AuthorizerFunction")["SECRETS_MAX_AGE"] == {"Ref": "AuthorizerStoreMaxAgeSeconds"}
    assert T.functions()["AuthorizerFunction"].environment["SECRETS_MAX_AGE"] == str(store["Default"])


# --- 5. tracing ---------------------------------------------------------------------------------
def test_traces_never_capture_responses_or_errors() -> None:
    env = _globals_env()
    assert env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false" and env["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false"
    for function in FUNCTIONS:
        assert "POWERTOOLS_TRACER_CAPTURE_RESPONSE" not in _env(function)
        assert "POWERTOOLS_TRACER_CAPTURE_ERROR" not in _env(function)


# --- 6. https, placeholders, log level ----------------------------------------------------------
@pytest.mark.parametrize("url, ok", [("https://api.buffr.com", True), ("https://sandbox.api.buffr.com/v2", True),
                                     ("http://api.buffr.com", False), ("http://127.0.0.1:4010", False),
                                     ("ftp://x", False), ("https://", False)])
def test_buffr_api_url_must_be_https(url: str, ok: bool) -> None:
    assert _allowed("BuffrApiUrl", url) is ok


SECRET_ARN_PARAMETERS = sorted(p for p in PARAMS if p.endswith("SecretArn"))


@pytest.mark.parametrize("parameter", SECRET_ARN_PARAMETERS)
def test_secret_arns_need_the_account_and_secrets_managers_random_suffix(parameter: str) -> None:
    assert _allowed(parameter, "") and _allowed(
        parameter, "arn:aws:secretsmanager:af-south-1:123456789012:secret:smartpay/dev/buffr-webhook-AbC123")
    for bad in ("arn:aws:secretsmanager:af-south-1:123456789012:secret:smartpay/dev/buffr-webhook",
                "arn:aws:secretsmanager:af-south-1:REPLACE_ME:secret:smartpay/dev/buffr-webhook-AbC123",
                "smartpay/dev/buffr-webhook"):
        assert not _allowed(parameter, bad), bad


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_every_samconfig_placeholder_is_rejected_by_the_template(env: str) -> None:
    overrides = _samconfig_overrides(env)
    placeholders = {k: v for k, v in overrides.items() if "REPLACE_ME" in v}
    assert placeholders, "the samconfig placeholders are gone: check this test still means something"
    for name, value in placeholders.items():
        assert not _allowed(name, value), f"{env}: {name}={value} would deploy"
    assert _allowed("AlarmEmail", "payments-oncall@ketchup.example") and _allowed("AlarmEmail", "")


def test_dev_logs_at_info_and_prod_may_not_log_at_debug() -> None:
    assert _samconfig_overrides("dev")["LogLevel"] == "INFO"
    rule = T.doc["Rules"]["DeployedStagesLogAtInfoOrAbove"]
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "LogLevel"}, "DEBUG"]}]}


# --- 7. SAM local endpoints ----------------------------------------------------------------------
def test_local_endpoint_variables_are_declared_and_empty_when_deployed() -> None:
    assert _globals_env()["LOCAL_AWS_ENDPOINT_URL"] == ""
    assert _env("ReconcileFunction")["LOCAL_LAMBDA_ENDPOINT_URL"] == ""
