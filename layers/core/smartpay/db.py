"""PostgreSQL access: one small connection pool per container, reused across warm invocations.

* A pooled connection is checked before it is handed out, so one dropped while the container
  was frozen is replaced transparently. The check costs nothing on a busy container: a
  connection the server closed (or sent anything on) is readable, which a zero-timeout
  ``poll`` sees locally; only a connection idle for more than ``DB_IDLE_PING_S`` (default 10 s,
  e.g. after a freeze) also gets psycopg_pool's round-trip ping. A ping is a server
  transaction, so pinging every checkout would double the transactions of a one-transaction
  request such as a webhook.
* Every function role has a ``statement_timeout`` and ``lock_timeout`` (role settings,
  smartpay/access.py) so a stuck query cannot eat the Lambda deadline.
* Nothing here pins a connection behind RDS Proxy: no startup ``options``, no session ``SET``,
  and no server-side prepared statements (``prepare_threshold=None``); locks held across
  transactions are leases (smartpay/leases.py), never session advisory locks.
* Connection failures and timeouts become :class:`DatabaseUnavailable` (HTTP 503), never a
  500 with a traceback; so does a transaction the server rolled back to serialise it (a deadlock,
  or a claim refused because the registry changed under it): the caller's retry succeeds.
* Each new connection reads the login from the secret (Powertools' cache, ``SECRETS_MAX_AGE``),
  so a rotated password reaches a warm container; a login the server refuses as a wrong
  password (SQLSTATE 28P01: the cache still held the value a rotation replaced) fetches the
  secret once more, past the cache, and connects again. Sessions already open are unaffected
  by a password change.
* A function runs only as its own role: each new connection reads ``current_user`` once and, if
  ``DB_ROLE`` is set and differs (a mis-wired secret), the connection is closed and every request
  is a 503 with an ERROR log line naming both roles, never a silent run as another role.
"""

from __future__ import annotations

import os
import select
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from smartpay.errors import DatabaseUnavailable
from smartpay.settings import database_url, env_int

_lock = threading.Lock()
_pool: ConnectionPool | None = None

# Errors that mean "the database is not reachable / not answering", as opposed to a bug.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.QueryCanceled, psycopg.errors.TransactionRollback,
                PoolTimeout)


_returned_at: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()


_connected_as: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = weakref.WeakKeyDictionary()


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.row_factory = dict_row  # type: ignore[assignment]
    _connected_as[conn] = conn.execute("SELECT current_user AS role").fetchone()["role"]  # type: ignore[index]
    conn.rollback()  # the pool takes only an idle connection
    _returned_at[conn] = time.monotonic()  # just connected: no ping needed


def password_refused(exc: psycopg.OperationalError) -> bool:
    """A login refused for its password (SQLSTATE 28P01, invalid_password). libpq reports no
    SQLSTATE for a failed connection, so the server's message for 28P01 identifies it too."""
    return exc.sqlstate == "28P01" or "password authentication failed" in str(exc)


class _Connection(psycopg.Connection[Any]):
    """A connection whose login, refused as a wrong password, is tried once more with the secret
    fetched anew: the pool's other connections, logged in before a rotation, keep working, but a
    new one would use the replaced password until the cache expires."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
        try:
            return super().connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            if not password_refused(exc):
                raise
        from smartpay.observability import logger

        logger.warning("database login refused: fetching the secret again (rotated) and retrying once")
        return super().connect(database_url(force=True), **kwargs)


class WrongRole(DatabaseUnavailable):
    """Connected as another role than the function's ``DB_ROLE``: refuse to run (503)."""


def _check_role(conn: psycopg.Connection[Any]) -> None:
    expected = os.environ.get("DB_ROLE")
    if not expected:
        return  # the schema owner's tools and the migrate function name no role
    actual = _connected_as.get(conn)
    if actual != expected:
        from smartpay.observability import logger

        logger.error("database role mismatch: refusing to run", extra={
            "db_role_expected": expected, "db_role_connected": actual,
            "fix": "this function's DATABASE_URL (secret) must log in as its DB_ROLE"})
        conn.close()  # the pool discards it
        raise WrongRole(f"This function runs only as database role {expected}; retry later.")


def _reset(conn: psycopg.Connection[Any]) -> None:
    """Pool ``reset`` hook: whatever a borrower switched on (:func:`autocommit`), the next
    borrower gets a transactional connection."""
    if conn.autocommit:
        conn.autocommit = False


def _check(conn: psycopg.Connection[Any]) -> None:
    """Pool ``check`` hook: raise if the connection is unusable (the pool then replaces it)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):  # an idle connection has nothing to read unless the server closed it
        conn.close()  # so the pool discards it rather than lending it again
        raise psycopg.OperationalError("the server closed the connection")
    idle = time.monotonic() - _returned_at.get(conn, 0.0)
    if idle > env_int("DB_IDLE_PING_S", 10, minimum=0):
        ConnectionPool.check_connection(conn)


def get_pool() -> ConnectionPool:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                database_url()  # a misconfigured secret fails here, in the caller, not in a pool worker
                _pool = ConnectionPool(
                    conninfo=database_url,  # read per new connection: cached, refreshed after a rotation
                    connection_class=_Connection,
                    min_size=0,
                    max_size=env_int("DB_POOL_SIZE", 2, minimum=1, maximum=100),
                    kwargs={
                        "prepare_threshold": None,  # a server-side prepare pins behind RDS Proxy
                        "connect_timeout": env_int("DB_CONNECT_TIMEOUT_S", 3, minimum=1),
                        "application_name": os.environ.get("POWERTOOLS_SERVICE_NAME") or "smartpay",
                    },
                    configure=_configure,
                    reset=_reset,
                    check=_check,
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
def connection(timeout: float | None = None) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A pooled connection; committed on success, rolled back on error (psycopg_pool semantics).

    ``timeout``: how long to wait for a free one (default ``DB_POOL_TIMEOUT_S``)."""
    try:
        with get_pool().connection(timeout=timeout) as conn:
            _check_role(conn)
            try:
                yield conn  # type: ignore[misc]
            finally:
                _returned_at[conn] = time.monotonic()  # idle from now on (see _check)
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable() from exc
    except psycopg.errors.UndefinedFunction as exc:
        if "smartpay_" not in str(exc):
            raise
        # New code before its migration (a deploy runs migrate after the functions are updated):
        # a 503 the caller retries, never a 500, until migrate has created what the code calls.
        from smartpay.observability import logger

        logger.error("the database schema is behind the code: invoke migrate", extra={"error": str(exc)[:200]})
        raise DatabaseUnavailable() from exc


@contextmanager
def autocommit(timeout: float | None = None) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A pooled connection where every statement is its own transaction (one round trip each).

    For loops whose every turn is one atomic statement (the disbursement batch) and for
    leases (reconciliation, cycle chunks): no BEGIN and COMMIT round trips around each.
    The pool's reset hook (:func:`_reset`) hands it to the next borrower transactional again.
    """
    with connection(timeout) as conn:
        conn.autocommit = True
        yield conn


def spare_autocommit(stack: ExitStack, wait: float = 1.0) -> psycopg.Connection[dict[str, Any]] | None:
    """A second :func:`autocommit` connection for the life of ``stack``, when the pool has one
    (``DB_POOL_SIZE`` >= 2) free within ``wait`` seconds; else None and the caller carries on
    with the connection it has: a spare speeds work up, its absence never fails it."""
    if get_pool().max_size < 2:
        return None
    try:
        return stack.enter_context(autocommit(wait))
    except DatabaseUnavailable:
        return None


@contextmanager
def transaction(*, pipelined: bool = False) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """One database transaction: everything inside commits together or not at all.

    ``pipelined``: run it in psycopg pipeline mode, so BEGIN travels with the first read and
    statements that return no rows travel with the next read or the COMMIT — a lock, a few
    writes and the commit cost two round trips instead of one each. Inside, read a statement's
    results (``fetchone``/``fetchall``) before relying on them; ``rowcount`` of a write is only
    known after the next read.
    """
    with connection() as conn:
        if not pipelined:
            with conn.transaction():
                yield conn
            return
        with conn.pipeline(), conn.transaction():
            yield conn
