"""Entry point of the local stack's moto process: moto's server with DynamoDB's atomic conditional writes.

moto's threaded server applies a conditional ``PutItem`` / ``UpdateItem`` / ``DeleteItem`` as a
check followed by a write, without a lock: two concurrent requests can both pass
``attribute_not_exists`` (seen here: 1 round in 40 of 32 racing writers). DynamoDB never lets that
happen, and Powertools' idempotency lock — one caller does the work, the others wait or replay —
relies on it. Serialising moto's item writes inside this process restores DynamoDB's guarantee;
reads and the other services (SQS long polls included) stay concurrent.

Run as ``python -m smartpay_tools.local.moto_process -H HOST -p PORT`` (moto's own flags).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

#: The DynamoDB backend's item writes: each may carry a condition that must hold at the write.
ITEM_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")


def serialise_item_writes() -> None:
    """Make every DynamoDB item write in this process one atomic step, as DynamoDB applies it."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()

    def atomic(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        locked.__smartpay_atomic__ = True  # type: ignore[attr-defined]
        return locked

    for name in ITEM_WRITES:
        method = getattr(DynamoDBBackend, name)
        if not getattr(method, "__smartpay_atomic__", False):
            setattr(DynamoDBBackend, name, atomic(method))


def main() -> None:
    from moto.server import main as moto_main

    serialise_item_writes()
    moto_main()


if __name__ == "__main__":
    main()
