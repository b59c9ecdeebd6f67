"""Cycle runs at national size and under one rate budget, through the local stack of
test_cycle_runs.py: an approval hands the rest of its enqueue to the queue side, and a cycle run
with a reconciliation running beside it stays inside Buffr's agreed rate together."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from smartpay_tools.buffr_sim.state import busiest_second
from tests.integration import test_cycle_runs
from tests.integration.test_cycle_runs import (
    _events,
    _messages,
    _seed,
    _set_rate,
    _start,
    _statuses,
    _wait,
)

pytestmark = pytest.mark.integration

QUEUE = "smartpay-cycle-local"
cycle_stack = test_cycle_runs.cycle_stack  # the same stack (one per module) and clean run per test
run_env = test_cycle_runs.run_env


@pytest.fixture()
def enqueue_on_queue_side(run_env: Any) -> Any:
    """Approve enqueues nothing itself: every chunk goes out from the queue side."""
    run_env.stop_event_sources()
    run_env.extra_env["CYCLE_ENQUEUE_IN_REQUEST_S"] = "0"
    run_env.restart_function("DisburseFunction")
    yield run_env
    run_env.stop_event_sources()
    run_env.extra_env.pop("CYCLE_ENQUEUE_IN_REQUEST_S")
    run_env.restart_function("DisburseFunction")
    run_env.start_event_sources()


def test_an_approval_hands_the_rest_of_its_enqueue_to_the_queue_side(enqueue_on_queue_side: Any,
                                                                      pg: psycopg.Connection[Any]) -> None:
    stack, cycle = enqueue_on_queue_side, "2026-06"
    _seed(pg, 300, cycle)
    approved = _start(stack, cycle)
    assert approved["status"] == "enqueuing"
    assert _messages(stack, QUEUE) == 1  # the hand-over, no chunk yet
    states = pg.execute("SELECT state, count(*) AS n FROM cycle_run_chunks WHERE run_id = %s GROUP BY state",
                        (approved["run_id"],)).fetchall()
    assert [(s["state"], s["n"]) for s in states] == [("planned", 3)]
    stack.start_event_sources()
    run = _wait(stack, cycle)
    assert run["status"] == "completed", run
    stats = stack.buffr.stats()
    assert _statuses(pg, cycle) == {"active": 300}
    assert stats["credits"] == 300 and stats["double_credited"] == {}
    assert [(e["action"], e["principal"]) for e in _events(pg, approved["run_id"])] == [
        ("prepared", "operator"), ("approved", "supervisor"), ("enqueuing", "supervisor"),
        ("enqueued", "supervisor"),  # by the queue side, on the checker's behalf
        ("completed", "system")]


def test_a_cycle_run_and_a_reconciliation_beside_it_stay_inside_one_rate(run_env: Any,
                                                                         pg: psycopg.Connection[Any]) -> None:
    """Payments and status reads draw from one budget: together at most the agreed rate (+5 % for
    the scheduling jitter between the senders and the simulator on this shared box)."""
    rate, cycle = 150, "2026-05"
    _seed(pg, 450, cycle)
    _seed(pg, 600, "2026-04")  # what reconciliation reads meanwhile: 600 status calls
    others = [r["id"] for r in pg.execute("SELECT id::text AS id FROM vouchers WHERE cycle = '2026-04'")]
    _set_rate(run_env, rate)
    run_env.restart_function("ReconcileFunction")  # its containers read the rate at start
    reconciled: dict[str, Any] = {}
    _start(run_env, cycle)
    reader = threading.Thread(target=lambda: reconciled.update(
        run_env.invoke("ReconcileFunction", {"voucher_ids": others})))
    reader.start()
    run = _wait(run_env, cycle, timeout=120)
    reader.join(timeout=120)
    assert run["status"] == "completed", run
    assert reconciled.get("status") == "completed", reconciled
    stats = run_env.buffr.stats(detail=True)
    assert stats["credits"] == 450 and stats["double_credited"] == {}
    assert len(stats["status_times"]) >= 600
    assert busiest_second(stats["disburse_times"] + stats["status_times"]) <= rate * 1.05
