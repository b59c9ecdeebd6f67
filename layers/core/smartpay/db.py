"""PostgreSQL access: one small connection pool per container, reused across warm invocations.

* ``check=ConnectionPool.check_connection`` tests a pooled connection before handing it out,
  so a connection dropped while the container was frozen is replaced transparently.
* Every connection runs with a ``statement_timeout`` so a stuck query cannot eat the
  Lambda deadline.
* Connection failures and timeouts become :class:`DatabaseUnavailable` (HTTP 503), never a
  500 with a traceback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from smartpay.errors import DatabaseUnavailable
from smartpay.settings import database_url, env_int

_lock = threading.Lock()
_pool: ConnectionPool | None = None

# Errors that mean "the database is not reachable / not answering", as opposed to a bug.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.QueryCanceled, PoolTimeout)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.row_factory = dict_row  # type: ignore[assignment]


def get_pool() -> ConnectionPool:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                timeout_ms = env_int("DB_STATEMENT_TIMEOUT_MS", 5000, minimum=100)
                _pool = ConnectionPool(
                    conninfo=database_url(),
                    min_size=0,
                    max_size=env_int("DB_POOL_SIZE", 2, minimum=1, maximum=100),
                    kwargs={
                        "options": f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
                        "connect_timeout": env_int("DB_CONNECT_TIMEOUT_S", 3, minimum=1),
                        "application_name": os.environ.get("POWERTOOLS_SERVICE_NAME") or "smartpay",
                    },
                    configure=_configure,
                    check=ConnectionPool.check_connection,
                    timeout=env_int("DB_POOL_TIMEOUT_S", 5, minimum=1),
                    reconnect_timeout=30,
                    open=True,
                    name="smartpay",
                )
    return _pool


def close_pool() -> None:
    """Close the pool (tests, the local stack's shutdown, and after a DATABASE_URL change)."""
    global _pool
    with _lock:
        if _pool is not None:
            _pool.close()
            _pool = None


@contextmanager
def connection() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A pooled connection; committed on success, rolled back on error (psycopg_pool semantics)."""
    try:
        with get_pool().connection() as conn:
            yield conn  # type: ignore[misc]
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable() from exc


@contextmanager
def transaction() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """One database transaction: everything inside commits together or not at all."""
    with connection() as conn, conn.transaction():
        yield conn
