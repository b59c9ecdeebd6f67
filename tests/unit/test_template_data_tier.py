"""The created database holds under RDS Proxy and an AZ failure: TLS-only and PII-free logs, a
failover reader in a second AZ, a proxy that answers before any function times out and an alarm
on pinned sessions, the RDS log group with retention and the logs key, customer-managed keys."""

from __future__ import annotations

from typing import Any

from smartpay import access
from smartpay_tools.local.template import Template

T = Template()
RES: dict[str, Any] = T.resources
PARAMS: dict[str, Any] = T.doc["Parameters"]
DB_FUNCTIONS = [k for k, v in RES.items() if v["Type"] == "AWS::Serverless::Function"
                and "DATABASE_URL" in v["Properties"].get("Environment", {}).get("Variables", {})]


def test_cluster_parameter_group_forces_tls_and_terse_error_logs() -> None:
    group = RES["DatabaseClusterParameterGroup"]["Properties"]
    assert group["Family"] == "aurora-postgresql16"
    assert group["Parameters"] == {"rds.force_ssl": "1", "log_error_verbosity": "terse",
                                   "log_min_error_statement": "panic"}
    cluster = RES["DatabaseCluster"]
    assert cluster["Properties"]["DBClusterParameterGroupName"] == {"Ref": "DatabaseClusterParameterGroup"}
    assert cluster["Properties"]["EngineVersion"].startswith("16.")


def test_a_writer_and_a_failover_reader_in_two_azs() -> None:
    writer, reader = RES["DatabaseInstance"]["Properties"], RES["DatabaseReaderInstance"]["Properties"]
    assert writer["AvailabilityZone"] == {"Fn::Select": [0, {"Ref": "DatabaseAvailabilityZones"}]}
    assert reader["AvailabilityZone"] == {"Fn::Select": [1, {"Ref": "DatabaseAvailabilityZones"}]}
    assert (writer["PromotionTier"], reader["PromotionTier"]) == (0, 1)  # the reader scales with the writer
    assert {writer["DBInstanceClass"], reader["DBInstanceClass"]} == {"db.serverless"}
    asserts = T.doc["Rules"]["CreatedDatabaseNeedsANetwork"]["Assertions"]
    assert any("DatabaseAvailabilityZones" in str(a["Assert"]) for a in asserts)
    assert set(RES["DatabaseProxyTargetGroup"]["DependsOn"]) == {"DatabaseInstance", "DatabaseReaderInstance"}


def test_proxy_borrow_timeout_is_below_every_database_functions_timeout() -> None:
    borrow = RES["DatabaseProxyTargetGroup"]["Properties"]["ConnectionPoolConfigurationInfo"][
        "ConnectionBorrowTimeout"]
    timeouts = []
    for function in DB_FUNCTIONS:
        timeout = RES[function]["Properties"].get("Timeout", T.doc["Globals"]["Function"]["Timeout"])
        if isinstance(timeout, dict):  # a parameter: its smallest allowed value
            timeout = PARAMS[timeout["Ref"]]["MinValue"]
        timeouts.append(timeout)
    assert borrow < min(timeouts), (borrow, timeouts)


def test_pinned_sessions_are_alarmed() -> None:
    alarm = RES["DatabaseProxyPinnedAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/RDS", "DatabaseConnectionsCurrentlySessionPinned")
    assert alarm["Dimensions"] == [{"Name": "ProxyName", "Value": {"Ref": "DatabaseProxy"}}]
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_rds_log_group_exists_first_with_retention_and_the_logs_key() -> None:
    group = RES["DatabaseLogGroup"]
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": "/aws/rds/cluster/smartpay-${Stage}/postgresql"}
    assert RES["DatabaseCluster"]["Properties"]["DBClusterIdentifier"] == {"Fn::Sub": "smartpay-${Stage}"}
    assert RES["DatabaseCluster"]["DependsOn"] == "DatabaseLogGroup"
    for logical_id, resource in RES.items():
        if resource["Type"] == "AWS::Logs::LogGroup":
            assert resource["Properties"]["RetentionInDays"] >= 90, logical_id
            assert resource["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["LogsKey", "Arn"]}, logical_id


def test_data_at_rest_uses_the_keys_of_its_class() -> None:
    cluster = RES["DatabaseCluster"]["Properties"]
    assert cluster["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert cluster["MasterUserSecret"] == {"KmsKeyId": {"Ref": "DataKey"}}
    for logical_id, resource in RES.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::DynamoDB::Table":
            assert props["SSESpecification"]["KMSMasterKeyId"] == {"Ref": "DataKey"}, logical_id
        if resource["Type"] == "AWS::SecretsManager::Secret":
            assert props["KmsKeyId"] == {"Ref": "DataKey"}, logical_id
        if resource["Type"] in {"AWS::SQS::Queue", "AWS::SNS::Topic"}:
            assert props["KmsMasterKeyId"] == {"Ref": "QueueKey"}, logical_id


def test_timeouts_are_role_settings_never_client_session_state() -> None:
    """A startup ``options`` string or a ``SET`` would pin the session behind RDS Proxy."""
    env = T.doc["Globals"]["Function"]["Environment"]["Variables"]
    assert "DB_STATEMENT_TIMEOUT_MS" not in env
    settings = {role.name: dict(role.settings) for role in access.ROLES}
    for role in ("smartpay_beneficiaries", "smartpay_disburse", "smartpay_webhook", "smartpay_reconcile"):
        assert {"statement_timeout", "lock_timeout"} <= set(settings[role]), role


def test_the_pool_prepares_nothing_server_side_and_sends_no_options(monkeypatch) -> None:
    from smartpay import db

    captured: dict[str, Any] = {}

    class FakePool:
        def __init__(self, **kwargs: Any) -> None:
            captured.update(kwargs)

    monkeypatch.setattr(db, "ConnectionPool", FakePool)
    monkeypatch.setattr(db, "_pool", None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/x")
    db.get_pool()
    assert captured["kwargs"]["prepare_threshold"] is None and "options" not in captured["kwargs"]
    monkeypatch.setattr(db, "_pool", None)
