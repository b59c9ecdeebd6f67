"""Nothing the functions send to PostgreSQL would pin a session behind RDS Proxy.

The local stack's functions (each as its own role) reach the test database through a relay that
reads the wire protocol as RDS Proxy does (tests/pinning_proxy.py): a cycle run (prepare,
approve, the queue consumer's chunks), Buffr's webhooks for it, beneficiary lookups and
reconciliation. Any startup ``options``, session ``SET``, named prepared statement or
session-level advisory lock is recorded; the test expects none, and every role to have worked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from smartpay_tools.data import bulk_seed
from smartpay_tools.local.scheduler import scheduled_event
from tests.pinning_proxy import PinningProxy

pytestmark = pytest.mark.integration

ROLES = {"smartpay_beneficiaries", "smartpay_disburse", "smartpay_webhook", "smartpay_reconcile"}


@pytest.fixture(scope="module")
def proxied_stack(pg_url: str) -> Iterator[tuple[Any, PinningProxy]]:
    from smartpay_tools.local.gateway import Gateway, serve
    from smartpay_tools.local.services import free_port
    from smartpay_tools.local.stack import LocalStack

    params = psycopg.conninfo.conninfo_to_dict(pg_url)
    proxy = PinningProxy(int(params.get("port") or 5432)).start()
    proxied = psycopg.conninfo.make_conninfo(**{**params, "host": "127.0.0.1", "port": str(proxy.port)})
    stack = LocalStack(database_url=proxied, max_concurrency=2, simulator_port=0,
                       webhook_knobs={"enabled": True},
                       extra_env={"BUFFR_MAX_RATE_PER_S": "1000", "DB_POOL_SIZE": "2"},
                       template_parameters={"CycleChunkSize": "40", "CycleQueueMaxConcurrency": "2",
                                            "CycleQueueVisibilityTimeout": "30"})
    stack.start_services(migrate=False)
    port = free_port()
    server = serve(Gateway(stack), port=port)
    stack.url = f"http://127.0.0.1:{port}"
    stack.connect_webhooks(stack.url)
    stack.start_event_sources()
    yield stack, proxy
    server.shutdown()
    stack.stop()
    proxy.stop()


def _wait(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def test_no_function_sends_anything_that_pins_a_proxy_session(proxied_stack, pg) -> None:
    stack, proxy = proxied_stack
    stack.buffr.reset()
    keys = stack.local
    ids = bulk_seed.issued_vouchers(pg, 120, cycle="2031-05", first=7_100_000_000, reference="test")
    path = f"{stack.url}/api/v1/cycles/old_age/2031-05/disbursement"

    prepared = httpx.post(path, headers={"x-api-key": keys["OperatorApiKey"], "Idempotency-Key": "pin-1"},
                          timeout=30)
    assert prepared.status_code in {200, 201}, prepared.text
    run = prepared.json()
    approved = httpx.post(f"{path}/approve", headers={"x-api-key": keys["SupervisorApiKey"]},
                          json={"run_id": run["run_id"], "fingerprint": run["fingerprint"]}, timeout=30)
    assert approved.status_code == 202, approved.text
    run = _wait(lambda: (r := httpx.get(path, headers={"x-api-key": keys["OperatorApiKey"]}).json())
                ["status"] == "completed" and r)
    assert run and run["status"] == "completed", run
    assert _wait(lambda: pg.execute("SELECT count(*) AS n FROM webhook_events").fetchone()["n"] >= 20)

    beneficiary = pg.execute("SELECT beneficiary_id::text AS id FROM vouchers WHERE id = %s",
                             (ids[0],)).fetchone()["id"]
    for _ in range(8):
        r = httpx.get(f"{stack.url}/api/v1/beneficiaries/{beneficiary}", headers={"x-api-key": keys["BuffrApiKey"]},
                      timeout=30)
        assert r.status_code == 200, r.text
    for _ in range(2):
        reply = stack.invoke("ReconcileFunction", scheduled_event("pin-test", stack.region))
        assert reply["checked"] >= 0 and reply["stopped"] != "busy", reply

    assert proxy.pins == []
    assert {role for role, n in proxy.statements.items() if n >= 10} >= ROLES, proxy.statements
    statuses = {r["status"]: r["n"] for r in pg.execute(
        "SELECT status, count(*) AS n FROM vouchers WHERE cycle = '2031-05' GROUP BY status")}
    assert sum(statuses.values()) == 120 and "issued" not in statuses, statuses  # Buffr webhooks move them on
    assert stack.buffr.stats(detail=True)["credits_per_voucher"] == {v: 1 for v in ids}
    assert pg.execute("SELECT count(*) AS n FROM smartpay_leases").fetchone()["n"] == 0
