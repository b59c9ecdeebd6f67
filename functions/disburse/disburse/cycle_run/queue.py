"""The cycle queue (SQS): chunks of a run go out ten messages per ``SendMessageBatch``."""

from __future__ import annotations

import threading
from typing import Any

from smartpay.errors import ServiceUnavailable
from smartpay.settings import env_str

_lock = threading.Lock()
_client: Any = None


def _sqs() -> Any:
    global _client
    with _lock:
        if _client is None:
            import boto3
            from botocore.config import Config

            _client = boto3.client("sqs", config=Config(connect_timeout=2, read_timeout=5,
                                                        retries={"mode": "standard", "max_attempts": 3}))
        return _client


def send_batch(bodies: dict[str, str]) -> dict[str, str]:
    """Send up to ten messages (entry id → body); returns entry id → message id of those SQS took.

    Entries SQS refused are simply missing from the answer: the caller sends them again later.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        reply = _sqs().send_message_batch(
            QueueUrl=env_str("CYCLE_QUEUE_URL"),
            Entries=[{"Id": entry, "MessageBody": body} for entry, body in bodies.items()])
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable("The cycle queue is unavailable; the run resumes where it stopped "
                                 "(POST …/disbursement/resume).", retry_after=5) from exc
    return {ok["Id"]: ok["MessageId"] for ok in reply.get("Successful", [])}


def deliver_again_in(receipt_handle: str, seconds: int) -> bool:
    """Make a received chunk message visible again in ``seconds`` rather than after the queue's
    visibility timeout; False when SQS did not take it (the visibility timeout then applies)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _sqs().change_message_visibility(QueueUrl=env_str("CYCLE_QUEUE_URL"), ReceiptHandle=receipt_handle,
                                         VisibilityTimeout=seconds)
    except (BotoCoreError, ClientError):
        return False
    return True
