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
    # the consumer divides the rate by the same concurrency the event source is capped at
    assert env["BUFFR_MAX_RATE_PER_S"] == {"Ref": "BuffrMaxRatePerSecond"}
    assert env["CYCLE_QUEUE_MAX_CONCURRENCY"] == {"Ref": "CycleQueueMaxConcurrency"}
    assert env["CYCLE_QUEUE_URL"] == {"Ref": "CycleQueue"}


@pytest.mark.parametrize(("fleet", "concurrency", "share"), [(500, 10, 47.5), (200, 2, 95.0), (0, 10, 0.0)])
def test_each_invocation_keeps_its_share_of_the_fleet_rate(monkeypatch: pytest.MonkeyPatch, fleet: int,
                                                          concurrency: int, share: float) -> None:
    from disburse.cycle_run import consumer

    monkeypatch.setenv("BUFFR_MAX_RATE_PER_S", str(fleet))
    monkeypatch.setenv("CYCLE_QUEUE_MAX_CONCURRENCY", str(concurrency))
    assert consumer.invocation_rate() == pytest.approx(share)
    assert consumer.invocation_rate() * concurrency <= fleet
