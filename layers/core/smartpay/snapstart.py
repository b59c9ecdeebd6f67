"""Lambda SnapStart for Python: what is loaded before the snapshot, and what is renewed after a restore.

With SnapStart Lambda initialises a published version once, snapshots the environment and starts
every later cold environment from a copy of that snapshot. So the init loads everything a first
request would otherwise load (modules, the idempotency store and its botocore client, the
OpenAPI validation models) but opens nothing: no database connection, no secret fetched, no
socket; copies would share them. The hooks (``snapshot-restore-py``, called by the runtime):

* before the snapshot: run the function's primers, then drop whatever the init or a primer may
  have left (the database pool, the Buffr client and its loop, cached secrets and parameters);
* after each restore: the same drop, so pools, clients and secrets are fetched fresh by this
  copy, and ``random`` re-seeded from the OS (every copy would otherwise draw the same numbers;
  ``secrets`` and ``uuid4`` read the OS directly).

Outside SnapStart (no ``snapshot_restore_py``: tests, tools, the local stack) nothing registers.

    snapstart.register(snapstart.prime_idempotency("webhook"))   # in handler.py, after the app
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any


def register(*primers: Callable[[], Any]) -> bool:
    """Register this function's hooks; False where the runtime has no SnapStart hooks module."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot, primers)
    register_after_restore(after_restore)
    return True


def before_snapshot(primers: tuple[Callable[[], Any], ...] = ()) -> None:
    for prime in primers:
        prime()
    forget()


def after_restore() -> None:
    random.seed()  # from os.urandom: this copy's own sequence
    forget()


def forget() -> None:
    """Drop every connection, client and cached secret this process holds (only modules loaded)."""
    db = sys.modules.get("smartpay.db")
    if db is not None:
        db.close_pool()
    buffr = sys.modules.get("smartpay.buffr")
    if buffr is not None:
        buffr.reset_client()
    if "aws_lambda_powertools.utilities.parameters" in sys.modules:
        sys.modules["aws_lambda_powertools.utilities.parameters"].clear_caches()


def prime_idempotency(*names: str) -> Callable[[], None]:
    """A primer: the idempotency configs' DynamoDB layers and their botocore client (service model
    loaded, no request made) and Powertools' idempotency machinery."""

    def prime() -> None:
        from aws_lambda_powertools.utilities.idempotency import idempotent_function  # noqa: F401

        from smartpay import idempotency

        for name in names:
            idempotency.persistence_layer(name)
    return prime


def prime_modules(*modules: str) -> Callable[[], None]:
    """A primer: import modules a first request would import lazily."""

    def prime() -> None:
        import importlib

        for module in modules:
            importlib.import_module(module)
    return prime
