"""SQS event sources for the local stack, polled the way Lambda's event source mapping polls them.

From template.yaml (nothing written down twice): the queue (its ``VisibilityTimeout`` and
``RedrivePolicy``, which moto applies on receive exactly as SQS does) and the function's ``SQS``
event — ``BatchSize``, ``MaximumBatchingWindowInSeconds``, ``ScalingConfig.MaximumConcurrency``
and ``FunctionResponseTypes: [ReportBatchItemFailures]``. Like Lambda:

* at most ``MaximumConcurrency`` invocations run at once; a poller receives only for a free slot;
* a batch is up to ``BatchSize`` messages (gathered for up to the batching window);
* a successful invocation deletes its messages, except those it lists in ``batchItemFailures``
  (an item identifier that is not one of the batch's message ids fails the whole batch);
* a failed invocation (error, timeout, crash) deletes nothing: every message becomes visible
  again after the visibility timeout, and after ``maxReceiveCount`` receives moves to the DLQ.

:meth:`SqsPoller.kill` stops a poller the way a crash would: in-flight invocations finish in
their workers but their results are dropped (nothing deleted), so their messages come back.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from smartpay_tools.local.lambda_runtime import InvocationError
from smartpay_tools.local.template import SqsEvent

POLL_WAIT_S = 1  # long-poll per receive, so stop() is noticed within about a second
DEFAULT_CONCURRENCY = 5  # Lambda's SQS pollers start at five concurrent batches without a maximum


@dataclass
class PollerStats:
    invocations: int = 0
    messages: int = 0
    deleted: int = 0
    failed_items: int = 0
    failed_invocations: int = 0
    max_concurrent: int = 0
    errors: list[str] = field(default_factory=list)


class SqsPoller:
    """One SQS event source mapping of one function."""

    def __init__(self, stack: Any, function: str, event: SqsEvent, queue_url: str, queue_arn: str,
                 sqs: Any) -> None:
        self.stack, self.function, self.event = stack, function, event
        self.queue_url, self.queue_arn, self.sqs = queue_url, queue_arn, sqs
        self.concurrency = event.max_concurrency or DEFAULT_CONCURRENCY
        self.stats = PollerStats()
        self._slots = threading.Semaphore(self.concurrency)
        self._running = 0
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._killed = False
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SqsPoller:
        self._stop.clear()
        self._killed = False
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency,
                                            thread_name_prefix=f"sqs-{self.event.event_name}")
        self._thread = threading.Thread(target=self._loop, name=f"poller-{self.event.event_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop receiving; let the batches in flight finish and settle (delete or leave) as usual."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def kill(self) -> None:
        """Stop at once, as a crash would: batches in flight settle nothing (their messages return)."""
        self._killed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(POLL_WAIT_S + 5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def busy(self) -> int:
        return self._running

    # --- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue
            try:
                messages = self._receive()
            except Exception as exc:  # moto gone (shutdown) or a transient error: try again
                self._slots.release()
                if self._stop.is_set():
                    return
                self.stats.errors.append(f"receive: {type(exc).__name__}: {exc}")
                time.sleep(0.5)
                continue
            if not messages or self._stop.is_set():
                self._slots.release()
                continue  # anything received after a stop is left to become visible again
            assert self._executor is not None
            self._executor.submit(self._invoke, messages)

    def _receive(self) -> list[dict[str, Any]]:
        """Up to BatchSize messages, waiting up to the batching window to fill the batch."""
        wanted = self.event.batch_size
        window_ends = time.monotonic() + self.event.batching_window_s
        got: list[dict[str, Any]] = []
        while len(got) < wanted and not self._stop.is_set():
            reply = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, wanted - len(got)),
                WaitTimeSeconds=0 if got else POLL_WAIT_S, AttributeNames=["All"], MessageAttributeNames=["All"])
            batch = reply.get("Messages", [])
            got.extend(batch)
            if not batch and (not got or time.monotonic() >= window_ends):
                break
            if got and time.monotonic() >= window_ends:
                break
        return got

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"], "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}), "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs", "eventSourceARN": self.queue_arn, "awsRegion": self.stack.region,
        }

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        with self._count_lock:
            self._running += 1
            self.stats.max_concurrent = max(self.stats.max_concurrent, self._running)
            self.stats.invocations += 1
            self.stats.messages += len(messages)
        try:
            failed = self._run(messages)
            if self._killed:
                return
            keep = {m["MessageId"] for m in messages} if failed is None else failed
            done = [m for m in messages if m["MessageId"] not in keep]
            for start in range(0, len(done), 10):
                self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])])
            self.stats.deleted += len(done)
            self.stats.failed_items += len(keep)
        except Exception as exc:  # never lose the poller thread to one batch
            self.stats.errors.append(f"settle: {type(exc).__name__}: {exc}")
        finally:
            with self._count_lock:
                self._running -= 1
            self._slots.release()

    def _run(self, messages: list[dict[str, Any]]) -> set[str] | None:
        """The message ids to keep (not delete); None: the whole batch failed."""
        try:
            result = self.stack.invoke(self.function, {"Records": [self._record(m) for m in messages]})
        except InvocationError as exc:
            self.stats.failed_invocations += 1
            self.stats.errors.append(f"invoke: {exc.kind}: {exc}")
            return None
        if not self.event.report_failures or not isinstance(result, dict):
            return set()
        items = result.get("batchItemFailures") or []
        ids = {m["MessageId"] for m in messages}
        keep = {str(item.get("itemIdentifier") or "") for item in items}
        if not keep <= ids:  # Lambda treats an unknown or empty identifier as a failed batch
            return None
        return keep


def make_pollers(stack: Any, sqs: Any, queue_urls: dict[str, str]) -> list[SqsPoller]:
    """A poller (not started) per enabled SQS event of every function in the template."""
    pollers = []
    by_logical = {q.logical_id: q for q in stack.template.queues()}
    for logical_id, spec in stack.functions.items():
        for event in spec.queues:
            if not event.enabled:
                continue
            queue = by_logical[event.queue]
            arn = f"arn:aws:sqs:{stack.region}:123456789012:{queue.name}"
            pollers.append(SqsPoller(stack, logical_id, event, queue_urls[queue.name], arn, sqs))
    return pollers


def create_queues(sqs: Any, stack: Any) -> dict[str, str]:
    """The template's queues in moto (dead-letter targets first); queue name → URL."""
    import json

    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for queue in stack.template.queues():
        attributes = {"VisibilityTimeout": str(queue.visibility_timeout), **queue.attributes}
        if queue.dead_letter_queue:
            target = arns[queue.dead_letter_queue]
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": target,
                                                      "maxReceiveCount": str(queue.max_receive_count)})
        url = sqs.create_queue(QueueName=queue.name, Attributes=attributes)["QueueUrl"]
        urls[queue.name] = url
        arns[queue.logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
    return urls


_COMPARE = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def sqs_alarm_states(stack: Any, sqs: Any, queue_urls: dict[str, str]) -> dict[str, str]:
    """The template's alarms on SQS queue depth, evaluated now against moto's queues: name → ALARM | OK.

    (CloudWatch evaluates the same metric — ApproximateNumberOfMessagesVisible, per QueueName —
    deployed; moto has no metrics for SQS, so the local stack reads the queue attribute.)
    """
    states = {}
    for alarm in stack.template.alarms().values():
        if alarm.get("Namespace") != "AWS/SQS" or alarm.get("MetricName") != "ApproximateNumberOfMessagesVisible":
            continue
        name = next((d["Value"] for d in alarm.get("Dimensions", []) if d["Name"] == "QueueName"), None)
        if name not in queue_urls:
            continue
        visible = int(sqs.get_queue_attributes(QueueUrl=queue_urls[name], AttributeNames=[
            "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
        breached = _COMPARE[alarm["ComparisonOperator"]](visible, float(alarm["Threshold"]))
        states[str(alarm["AlarmName"])] = "ALARM" if breached else "OK"
    return states
