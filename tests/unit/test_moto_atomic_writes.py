"""The local stack's moto keeps DynamoDB's promise: a conditional write is checked and applied atomically.

Powertools' idempotency lock (one caller does the work, the others replay) rests on that promise.
The window between moto's check and its write is widened here, so the race shows every time.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend, table

from smartpay_tools.local import moto_process

WRITERS = 8


def _winners_of_a_race(monkeypatch: pytest.MonkeyPatch) -> int:
    check = table.get_filter_expression

    def slow_check(*args, **kwargs):  # every writer evaluates the condition, then waits before writing
        condition = check(*args, **kwargs)
        time.sleep(0.05)
        return condition

    monkeypatch.setattr(table, "get_filter_expression", slow_check)
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="af-south-1")
        ddb.create_table(TableName="locks", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
        start = threading.Barrier(WRITERS)

        def claim(writer: int) -> int:
            start.wait()
            try:
                ddb.put_item(TableName="locks", Item={"id": {"S": "disburse-1"}, "by": {"N": str(writer)}},
                             ConditionExpression="attribute_not_exists(id)")
                return 1
            except ddb.exceptions.ConditionalCheckFailedException:
                return 0

        with ThreadPoolExecutor(WRITERS) as pool:
            return sum(pool.map(claim, range(WRITERS)))


@pytest.fixture()
def restore_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in moto_process.ITEM_WRITES:  # undone after the test: other tests use moto in-process
        monkeypatch.setattr(DynamoDBBackend, name, getattr(DynamoDBBackend, name))


def test_plain_moto_lets_two_conditional_writers_win(aws_env, restore_backend, monkeypatch) -> None:
    assert _winners_of_a_race(monkeypatch) > 1  # why the local stack does not run plain moto


def test_the_local_stacks_moto_lets_exactly_one_conditional_writer_win(aws_env, restore_backend,
                                                                       monkeypatch) -> None:
    moto_process.serialise_item_writes()
    assert _winners_of_a_race(monkeypatch) == 1


def test_the_local_stack_starts_moto_through_that_entry_point() -> None:
    from smartpay_tools.local.services import MotoServer

    server = MotoServer().start()
    try:
        with open(f"/proc/{server.process.pid}/cmdline", "rb") as cmdline:
            assert b"smartpay_tools.local.moto_process" in cmdline.read().split(b"\0")
    finally:
        server.stop()
