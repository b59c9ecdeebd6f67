"""Cycle runs in-process, with the interleavings forced at the named points: pause, resume,
enqueue and park never undo one another, a run can be cancelled (paused, four eyes), and a run
always finishes (a pending voucher that may not be re-sent is looked up at Buffr).

The disburse code runs as its own role against the test database, the cycle queue on moto (no
poller: each test hands a chunk's message to the consumer itself) and the Buffr simulator.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from smartpay_tools.data import bulk_seed
from tests import factories
from tests.fixtures_disburse import lambda_context

pytestmark = pytest.mark.integration

PROGRAMME = "old_age"
QUEUE = "smartpay-cycle-local"


@pytest.fixture()
def runs(disburse_env: dict, local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The cycle-run service and consumer, wired to the cycle queue (no poller: tests deliver)."""
    monkeypatch.setenv("CYCLE_QUEUE_URL", local_stack.queue_urls[QUEUE])
    monkeypatch.delenv("BUFFR_MAX_RATE_PER_S", raising=False)
    from disburse.cycle_run import consumer, repository, service

    yield type("Runs", (), {"service": service, "repository": repository, "consumer": consumer})


def _seed(pg: psycopg.Connection[Any], n: int, cycle: str) -> None:
    bulk_seed.issued_vouchers(pg, n, cycle=cycle, programme=PROGRAMME,
                              first=factories._rng.randrange(10**9, 9 * 10**10), reference="test")


def _caller(service: Any, who: str) -> Any:
    return service.Caller(principal=f"{who}-principal", key_id=f"{who}-key", reference=f"req-{uuid.uuid4()}")


def _prepare(runs: Any, cycle: str) -> str:
    run, _ = runs.service.prepare(PROGRAMME, cycle, f"prep-{uuid.uuid4()}", _caller(runs.service, "maker"))
    return str(run.run_id)


def _record(pg: psycopg.Connection[Any], run_id: str, chunk_no: int = 0) -> SQSRecord:
    """The chunk's current message, as SQS hands it to the consumer."""
    token = pg.execute("SELECT token::text FROM cycle_run_chunks WHERE run_id = %s AND chunk_no = %s",
                       (run_id, chunk_no)).fetchone()["token"]
    ids = [r["id"] for r in pg.execute("SELECT voucher_id::text AS id FROM cycle_run_items WHERE run_id = %s "
                                       "AND chunk_no = %s ORDER BY voucher_id", (run_id, chunk_no))]
    body = json.dumps({"run_id": run_id, "chunk_no": chunk_no, "token": token, "voucher_ids": ids})
    return SQSRecord({"messageId": str(uuid.uuid4()), "body": body, "attributes": {}, "messageAttributes": {},
                      "eventSource": "aws:sqs", "receiptHandle": "r"})


def _run(pg: psycopg.Connection[Any], run_id: str) -> dict[str, Any]:
    return pg.execute("SELECT status FROM cycle_runs WHERE id = %s", (run_id,)).fetchone()


def _actions(pg: psycopg.Connection[Any], run_id: str) -> list[str]:
    return [r["action"] for r in pg.execute("SELECT action FROM cycle_run_events WHERE run_id = %s ORDER BY id",
                                            (run_id,))]


def _chunks(pg: psycopg.Connection[Any], run_id: str) -> list[str]:
    return [r["state"] for r in pg.execute("SELECT state FROM cycle_run_chunks WHERE run_id = %s ORDER BY chunk_no",
                                           (run_id,))]


def _statuses(pg: psycopg.Connection[Any], cycle: str) -> dict[str, int]:
    return {r["status"]: r["n"] for r in pg.execute(
        "SELECT status, count(*) AS n FROM vouchers WHERE cycle = %s GROUP BY status", (cycle,))}


# --- races -----------------------------------------------------------------------------------------

def test_a_pause_while_enqueue_finishes_is_not_undone_by_enqueue(runs: Any, pg: psycopg.Connection[Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cycle = "2027-01"
    _seed(pg, 5, cycle)
    run_id = _prepare(runs, cycle)
    original = runs.repository.chunks_left_to_enqueue

    def paused_meanwhile(conn: Any, rid: str) -> int:
        # the named point: enqueue has read "enqueuing" and sent every chunk; a pause commits now
        if _run(pg, rid)["status"] == "enqueuing":
            runs.service.pause(PROGRAMME, cycle, _caller(runs.service, "operator"))
        return original(conn, rid)

    monkeypatch.setattr(runs.repository, "chunks_left_to_enqueue", paused_meanwhile)
    runs.service.approve(PROGRAMME, cycle, _caller(runs.service, "checker"))
    assert _run(pg, run_id)["status"] == "paused"  # not turned back to running by enqueue
    assert _actions(pg, run_id) == ["prepared", "approved", "paused"]


def test_a_chunk_parked_after_a_resume_is_sent_not_left_parked(runs: Any, pg: psycopg.Connection[Any],
                                                                local_stack: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cycle = "2027-02"
    _seed(pg, 5, cycle)
    run_id = _prepare(runs, cycle)
    runs.service.approve(PROGRAMME, cycle, _caller(runs.service, "checker"))
    runs.service.pause(PROGRAMME, cycle, _caller(runs.service, "operator"))
    record = _record(pg, run_id)
    original = runs.repository.park

    def resumed_meanwhile(conn: Any, rid: str, chunk_no: int, token: str) -> Any:
        # the named point: the consumer saw the run paused and is about to park; a resume commits now
        runs.service.resume(PROGRAMME, cycle, _caller(runs.service, "operator"))
        monkeypatch.setattr(runs.repository, "park", original)
        return original(conn, rid, chunk_no, token)

    monkeypatch.setattr(runs.repository, "park", resumed_meanwhile)
    with pytest.raises(runs.consumer.ChunkNotSettled):  # the message comes back (SQS redelivers it)
        runs.consumer.process_chunk(record, lambda_context())
    assert _run(pg, run_id)["status"] == "running" and _chunks(pg, run_id) == ["enqueued"]
    runs.consumer.process_chunk(record, lambda_context())  # the redelivery
    assert _run(pg, run_id)["status"] == "completed" and _chunks(pg, run_id) == ["done"]
    assert _statuses(pg, cycle) == {"active": 5}
    stats = local_stack.buffr.stats()
    assert stats["credits"] == 5 and stats["double_credited"] == {}
    assert _actions(pg, run_id) == ["prepared", "approved", "enqueued", "paused", "resumed", "completed"]


def test_the_database_refuses_a_parked_chunk_in_a_running_run(runs: Any, pg: psycopg.Connection[Any]) -> None:
    cycle = "2027-03"
    _seed(pg, 3, cycle)
    run_id = _prepare(runs, cycle)
    runs.service.approve(PROGRAMME, cycle, _caller(runs.service, "checker"))
    assert _run(pg, run_id)["status"] == "running"
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE cycle_run_chunks SET state = 'parked' WHERE run_id = %s", (run_id,))
    runs.service.pause(PROGRAMME, cycle, _caller(runs.service, "operator"))
    pg.execute("UPDATE cycle_run_chunks SET state = 'parked' WHERE run_id = %s", (run_id,))
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("UPDATE cycle_runs SET status = 'running' WHERE id = %s", (run_id,))
    assert _chunks(pg, run_id) == ["parked"] and _run(pg, run_id)["status"] == "paused"
