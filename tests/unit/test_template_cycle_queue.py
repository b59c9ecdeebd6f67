"""template.yaml's cycle queue keeps Lambda's rules for SQS consumers and Buffr's rate."""

from __future__ import annotations

from typing import Any

import pytest

from smartpay_tools.local.template import Template

T = Template()
RES: dict[str, Any] = T.resources
PARAMS: dict[str, Any] = T.doc["Parameters"]


def _number(name: str, bound: str = "Default") -> int:
    return int(PARAMS[name][bound])


def test_visibility_timeout_exceeds_the_function_timeout_whatever_is_deployed() -> None:
    queue = RES["CycleQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == {"Ref": "CycleQueueVisibilityTimeout"}
    assert RES["DisburseFunction"]["Properties"]["Timeout"] == {"Ref": "DisburseFunctionTimeout"}
    # the smallest visibility timeout allowed beats the largest function timeout allowed
    assert _number("CycleQueueVisibilityTimeout", "MinValue") > _number("DisburseFunctionTimeout", "MaxValue")
    assert _number("CycleQueueVisibilityTimeout") >= 6 * _number("DisburseFunctionTimeout")  # AWS's advice


def test_the_queue_dead_letters_after_n_receives_and_the_dlq_is_alarmed() -> None:
    redrive = RES["CycleQueue"]["Properties"]["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": {"Fn::GetAtt": ["CycleDeadLetterQueue", "Arn"]},
                       "maxReceiveCount": {"Ref": "CycleMaxReceiveCount"}}
    alarm = RES["CycleDeadLetterAlarm"]["Properties"]
    assert alarm["Namespace"] == "AWS/SQS" and alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["CycleDeadLetterQueue",
                                                                                 "QueueName"]}}]
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_event_source_reports_partial_failures_and_caps_concurrency_with_the_rate_share() -> None:
    event = RES["DisburseFunction"]["Properties"]["Events"]["CycleQueue"]
    assert event["Type"] == "SQS"
    props = event["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "CycleQueueMaxConcurrency"}}
    env = RES["DisburseFunction"]["Properties"]["Environment"]["Variables"]
    assert env["BUFFR_MAX_RATE_PER_S"] == {"Ref": "BuffrMaxRatePerSecond"}
    assert env["CYCLE_QUEUE_MAX_CONCURRENCY"] == {"Ref": "CycleQueueMaxConcurrency"}
    assert env["CYCLE_QUEUE_URL"] == {"Ref": "CycleQueue"}


@pytest.mark.parametrize(("fleet", "in_flight"), [(500, 100), (200, 100), (40, 20), (0, 100)])
def test_each_invocation_keeps_enough_calls_in_flight_for_the_whole_budget(monkeypatch: pytest.MonkeyPatch,
                                                                          fleet: int, in_flight: int) -> None:
    from disburse.cycle_run import consumer
    from smartpay import buffr

    monkeypatch.setenv("BUFFR_MAX_RATE_PER_S", str(fleet))
    monkeypatch.setenv("BUFFR_CONCURRENCY", "100")
    monkeypatch.setenv("BUFFR_API_URL", "https://buffr.test")
    buffr.reset_client()
    try:
        assert consumer.invocation_concurrency() == in_flight
    finally:
        buffr.reset_client()


def test_every_function_calling_buffr_draws_from_the_one_rate_budget_table() -> None:
    for function in ("DisburseFunction", "ReconcileFunction"):
        props = RES[function]["Properties"]
        env = props["Environment"]["Variables"]
        assert env["RATE_BUDGET_TABLE"] == {"Ref": "RateBudgetTable"}
        assert env["BUFFR_MAX_RATE_PER_S"] == {"Ref": "BuffrMaxRatePerSecond"}
        role = RES[props["Role"]["Fn::GetAtt"][0]]["Properties"]
        statements = [s for p in role["Policies"] if isinstance(p, dict) and "PolicyDocument" in p
                      for s in p["PolicyDocument"]["Statement"]]
        budget = [s for s in statements if s.get("Sid") == "BuffrRateBudget"]
        assert budget == [{"Sid": "BuffrRateBudget", "Effect": "Allow", "Action": ["dynamodb:UpdateItem"],
                           "Resource": {"Fn::GetAtt": ["RateBudgetTable", "Arn"]}}]


@pytest.mark.parametrize(("vouchers", "size"), [(300_000, 500), (2_000, 400), (3, 1), (1, 1), (2_499, 500)])
def test_a_runs_chunks_are_sized_so_every_consumer_gets_one(monkeypatch: pytest.MonkeyPatch, vouchers: int,
                                                              size: int) -> None:
    from disburse.cycle_run.service import chunk_size

    monkeypatch.setenv("CYCLE_CHUNK_SIZE", "500")
    monkeypatch.setenv("CYCLE_QUEUE_MAX_CONCURRENCY", "5")
    assert chunk_size(vouchers) == size
