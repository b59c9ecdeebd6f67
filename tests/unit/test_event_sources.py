"""The local SQS poller settles batches the way Lambda's event source mapping does."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from smartpay_tools.local.event_sources import SqsPoller
from smartpay_tools.local.lambda_runtime import InvocationError
from smartpay_tools.local.template import SqsEvent


class FakeSqs:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.waiting = list(messages)
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def receive_message(self, MaxNumberOfMessages: int, **_: Any) -> dict[str, Any]:
        with self.lock:
            batch, self.waiting = self.waiting[:MaxNumberOfMessages], self.waiting[MaxNumberOfMessages:]
        if not batch:
            time.sleep(0.01)
        return {"Messages": batch}

    def delete_message_batch(self, Entries: list[dict[str, str]], **_: Any) -> None:
        with self.lock:
            self.deleted.extend(e["ReceiptHandle"] for e in Entries)


class FakeStack:
    region = "af-south-1"

    def __init__(self, reply: Any, delay: float = 0.0) -> None:
        self.reply, self.delay, self.events = reply, delay, []

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        self.events.append(event)
        time.sleep(self.delay)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply(event) if callable(self.reply) else self.reply


def _messages(n: int) -> list[dict[str, Any]]:
    return [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": "{}"} for i in range(n)]


def _drain(stack: FakeStack, sqs: FakeSqs, *, batch: int, concurrency: int | None = 2,
           report: bool = True) -> SqsPoller:
    event = SqsEvent("Queue", "Queue", batch, concurrency, report, 0, True)
    poller = SqsPoller(stack, "Fn", event, "url", "arn", sqs).start()
    deadline = time.monotonic() + 10
    while (sqs.waiting or poller.busy) and time.monotonic() < deadline:
        time.sleep(0.02)
    poller.stop()
    return poller


def test_items_reported_as_failures_stay_on_the_queue_the_rest_are_deleted() -> None:
    sqs = FakeSqs(_messages(3))
    _drain(FakeStack({"batchItemFailures": [{"itemIdentifier": "m1"}]}), sqs, batch=3)
    assert sorted(sqs.deleted) == ["r0", "r2"]


@pytest.mark.parametrize("reply", [{"batchItemFailures": [{"itemIdentifier": "nope"}]},
                                   {"batchItemFailures": [{"itemIdentifier": ""}]},
                                   InvocationError("error", {"errorMessage": "boom"})])
def test_an_unknown_identifier_or_a_failed_invocation_keeps_the_whole_batch(reply: Any) -> None:
    sqs = FakeSqs(_messages(2))
    _drain(FakeStack(reply), sqs, batch=2)
    assert sqs.deleted == []


def test_without_report_batch_item_failures_a_success_deletes_everything() -> None:
    sqs = FakeSqs(_messages(2))
    _drain(FakeStack({"batchItemFailures": [{"itemIdentifier": "m0"}]}), sqs, batch=2, report=False)
    assert sorted(sqs.deleted) == ["r0", "r1"]


def test_batch_size_and_maximum_concurrency_are_honoured() -> None:
    sqs = FakeSqs(_messages(12))
    stack = FakeStack({"batchItemFailures": []}, delay=0.1)
    poller = _drain(stack, sqs, batch=3, concurrency=2)
    assert max(len(e["Records"]) for e in stack.events) == 3
    assert sum(len(e["Records"]) for e in stack.events) == 12
    assert poller.stats.max_concurrent == 2
    record = stack.events[0]["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == "arn"
