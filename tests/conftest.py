"""Shared fixtures. Integration fixtures never skip: a missing dependency fails the run and says what.

* ``pg_url``: a fresh database on the real PostgreSQL server (``TEST_PG_ADMIN_URL``, default
  postgresql://postgres@127.0.0.1:5432/postgres), migrated, dropped at the end of the session.
* ``clean_db``: empties every data table before a test (TRUNCATE; the audit trigger allows it).
* ``aws_env``: fake credentials and a region, so boto3 never reaches AWS.
* ``local_stack`` / ``gateway_url``: the template's functions behind the local API gateway,
  on moto's server, the test database and the Buffr simulator (a free port), over real HTTP
  on loopback.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

pytest_plugins = ["tests.fixtures_dbroles", "tests.fixtures_webhook", "tests.fixtures_disburse", "tests.fixtures_reconcile"]

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATA_TABLES = (
    "cycle_run_chunks", "cycle_run_items", "cycle_run_events", "cycle_runs", "reconciliation_records", "reconciliation_runs", "webhook_events", "voucher_events",
    "vouchers", "beneficiaries",
)

os.environ.setdefault("AWS_DEFAULT_REGION", "af-south-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KetchupSmartPay")
os.environ.setdefault("POWERTOOLS_DEV", "false")
# In-process code runs as the local stage, which alone may connect without TLS (and call the
# simulator over plain http); deployed stages always use verify-full and https.
os.environ.setdefault("STAGE", "local")
os.environ.setdefault("DATABASE_SSLMODE", "disable")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    from smartpay import migrate
    from smartpay_tools.local.services import drop_database, ensure_database

    name = f"smartpay_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        url = ensure_database(ADMIN_URL, name)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for integration tests and is not reachable at "
                    f"{ADMIN_URL} (set TEST_PG_ADMIN_URL): {exc}", pytrace=False)
    migrate.apply(url)
    yield url
    from smartpay import db

    db.close_pool()
    drop_database(ADMIN_URL, name)


@pytest.fixture()
def db_env(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """In-process code (services, repositories) talks to the test database."""
    from smartpay import db

    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.delenv("DATABASE_URL_SECRET", raising=False)
    db.close_pool()
    yield pg_url
    db.close_pool()


@pytest.fixture()
def clean_db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")
    return pg_url


@pytest.fixture()
def pg(clean_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A direct connection for arranging and asserting database state, as the owner acting as the
    operator: the audit rows the database writes for its voucher changes name ``operator``/``test``."""
    from psycopg.rows import dict_row

    with psycopg.connect(clean_db, autocommit=True, row_factory=dict_row,
                         options="-c smartpay.source=operator -c smartpay.reference=test") as conn:
        yield conn


@pytest.fixture()
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "af-south-1",
                       "AWS_REGION": "af-south-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def local_stack(pg_url: str) -> Iterator[Any]:
    from smartpay_tools.local.stack import LocalStack

    # webhooks off by default: tests that want the simulator's webhooks switch them on (and reset)
    stack = LocalStack(database_url=pg_url, max_concurrency=4, simulator_port=0,
                       webhook_knobs={"enabled": False})
    try:
        stack.start_services(migrate=False)
    except Exception as exc:  # moto's server is part of the test dependencies
        pytest.fail(f"could not start the local stack's services: {exc}", pytrace=False)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def gateway_url(local_stack: Any) -> Iterator[str]:
    from smartpay_tools.local.gateway import Gateway, docs_routes, serve
    from smartpay_tools.local.services import free_port

    port = free_port()
    server = serve(Gateway(local_stack, extra_routes=docs_routes()), port=port)
    local_stack.connect_webhooks(f"http://127.0.0.1:{port}")
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.fixture(scope="session")
def api_keys(local_stack: Any) -> dict[str, str]:
    return {"buffr": local_stack.local["BuffrApiKey"], "operator": local_stack.local["OperatorApiKey"],
            "payments": local_stack.local["PaymentsApiKey"], "supervisor": local_stack.local["SupervisorApiKey"]}
