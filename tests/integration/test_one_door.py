"""One door for money: nothing reaches Buffr's disburse endpoint except a voucher of a run approved
by a principal other than its maker (docs/api.md#one-way-to-pay).

Through the local stack of tests/integration/test_cycle_runs.py (gateway, authorizer, the disburse
function, the cycle queue polled as Lambda does, the Buffr simulator), plus the database gate
itself and the approve/re-prepare race driven in process.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from smartpay_tools.cli.app import build_parser, main
from tests import factories
from tests.integration import test_cycle_runs as cycle_runs_tests
from tests.integration.test_cycle_runs import PROGRAMME, _call, _keys, _seed, _statuses, _wait

pytestmark = pytest.mark.integration

cycle_stack = cycle_runs_tests.cycle_stack  # the same stack fixtures (one stack per module)
run_env = cycle_runs_tests.run_env


def _prepared(stack: Any, cycle: str, *, key: str = "operator", supplementary: dict[str, Any] | None = None,
              idempotency_key: str | None = None) -> dict[str, Any]:
    headers = {"x-api-key": _keys(stack)[key], "Idempotency-Key": idempotency_key or f"prep-{uuid.uuid4()}"}
    path = f"/api/v1/cycles/{PROGRAMME}/{cycle}/disbursement" + ("/supplementary" if supplementary else "")
    reply = httpx.post(stack.url + path, headers=headers, json=supplementary, timeout=30)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def _approve(stack: Any, cycle: str, run: dict[str, Any], *, key: str = "supervisor",
             **override: str) -> httpx.Response:
    return _call(stack, "POST", cycle, "approve", key=key,
                 body={"run_id": run["run_id"], "fingerprint": run["fingerprint"], **override})


def _credits(stack: Any) -> dict[str, int]:
    return dict(stack.buffr.stats(detail=True)["credits_per_voucher"])


# --- every door, with only the maker's key -------------------------------------------------------

#: Every API route of the template, and the body a maker sends it. A route missing here fails the
#: test: a new route is a new door until it is listed (and shown to send nothing).
ROUTE_BODIES: dict[tuple[str, str], Any] = {
    ("GET", "/api/v1/beneficiaries/{beneficiary_id}"): None,
    ("POST", "/api/v1/beneficiaries/verify"): {"id_number": "00000000000"},
    ("POST", "/api/v1/vouchers"): "issue",
    ("GET", "/api/v1/vouchers/{voucher_id}"): None,
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement"): None,
    ("GET", "/api/v1/cycles/{programme}/{cycle}/disbursement"): None,
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/supplementary"): "supplementary",
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/approve"): "approve",
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/pause"): None,
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/resume"): None,
    ("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/cancel"): None,
    ("POST", "/api/v1/webhooks/buffr"): {"type": "voucher.activated"},
}

#: Every CLI command and how it could reach Buffr's disburse endpoint. ``run``: run here with the
#: maker's key; otherwise why it cannot (or which door above it goes through). A new command fails
#: the test until it is listed.
CLI_COMMANDS: dict[str, str] = {
    "cycle": "run",
    "invoke": "a function with an event file: the disburse function's direct events are invoked below",
    "reconcile": "the reconcile function: its re-send is the direct invocation below",
    "demo": "its own stack and database; pays through cycle runs approved by the supervisor",
    "serve": "serves the routes above",
    "replay": "webhooks to Ketchup; never calls Buffr",
    "report": "reads reports", "keys": "API key store", "seed-events": "inserts saved-event rows",
    "sign-event": "prints an event", "migrate": "schema", "generate": "writes a CSV",
    "import-payroll": "issues vouchers (never sends)", "import-beneficiaries": "registry",
    "simulator": "runs the simulator", "openapi": "document", "audit": "reads the audit trail",
}


def _cli_commands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def test_with_only_the_makers_key_no_route_command_or_direct_event_credits_anything(
        run_env: Any, pg: psycopg.Connection[Any]) -> None:
    stack, cycle, maker = run_env, "2026-05", "payments"  # the maker's key holds cycles:approve too
    _seed(pg, 20, cycle)
    held_b = factories.beneficiary(pg)
    held = factories.voucher(pg, held_b["id"], cycle=cycle)["id"]
    pg.execute("UPDATE beneficiaries SET status = 'suspended' WHERE id = %s", (held_b["id"],))
    pg.execute("UPDATE beneficiaries SET status = 'active' WHERE id = %s", (held_b["id"],))  # eligible, held
    run = _prepared(stack, cycle, key=maker)
    ids = [r["id"] for r in pg.execute("SELECT id::text AS id FROM vouchers WHERE cycle = %s", (cycle,))]

    routes = {(r.method, r.path) for f in stack.template.functions().values() for r in f.routes}
    assert routes == set(ROUTE_BODIES), "classify every route in ROUTE_BODIES (a new route is a new door)"
    assert _cli_commands() == set(CLI_COMMANDS), "classify every CLI command in CLI_COMMANDS"

    answers = {}
    for method, path in sorted(routes):
        body = ROUTE_BODIES[(method, path)]
        if body == "issue":
            body = {"beneficiary_id": held_b["id"], "amount_cents": 1000, "currency": "NAD",
                    "programme": PROGRAMME, "cycle": "2026-04", "expires_at": "2031-01-01T00:00:00Z"}
        elif body == "supplementary":
            body = {"voucher_ids": ids[:5]}
        elif body == "approve":
            body = {"run_id": run["run_id"], "fingerprint": run["fingerprint"]}
        url = stack.url + path.format(beneficiary_id=held_b["id"], voucher_id=ids[0], programme=PROGRAMME,
                                      cycle=cycle)
        reply = httpx.request(method, url, json=body, timeout=30, headers={
            "x-api-key": _keys(stack)[maker], "Idempotency-Key": f"door-{uuid.uuid4()}"})
        answers[(method, path)] = reply.status_code
    assert answers[("POST", "/api/v1/cycles/{programme}/{cycle}/disbursement/approve")] == 403

    # The CLI, in process, as the maker: start (+ approve with the maker's key), approve, resume.
    keys = ["--url", stack.url, "--api-key", _keys(stack)[maker], "--programme", PROGRAMME, "--cycle", cycle]
    latest = _call(stack, "GET", cycle).json()
    assert main(["cycle", "start", *keys, "--key", "door-cli", "--approve-with", _keys(stack)[maker]]) == 2
    assert main(["cycle", "approve", *keys, "--run-id", latest["run_id"], "--fingerprint", latest["fingerprint"]]) == 2
    assert main(["cycle", "resume", *keys]) == 2

    # The disburse function's direct events: reconciliation's re-send of every voucher, and a chunk
    # message naming them (with no current token: dropped).
    resent = stack.invoke("DisburseFunction", {"run_id": str(uuid.uuid4()), "voucher_ids": ids})
    assert {r["outcome"] for r in resent["results"]} == {"skipped"}
    assert {r["reason"] for r in resent["results"]} == {"not sent: not part of an approved run"}
    stack.invoke("ReconcileFunction", {"mode": "full"})

    _wait(stack, cycle, "awaiting_approval", timeout=5)
    assert _credits(stack) == {} and stack.buffr.stats()["calls"].get("disburse", 0) == 0
    assert _statuses(pg, cycle) == {"issued": 20, "held": 1}
    assert factories.count(pg, "SELECT count(*) FROM cycle_runs WHERE approved_at IS NOT NULL") == 0
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_items") == 0
    assert held in ids


# --- approve names what the checker saw ----------------------------------------------------------

def test_approve_of_another_run_or_fingerprint_is_409_and_enqueues_nothing(
        run_env: Any, pg: psycopg.Connection[Any]) -> None:
    stack, cycle = run_env, "2026-06"
    _seed(pg, 30, cycle)
    first = _prepared(stack, cycle)
    wrong_print = _approve(stack, cycle, first, fingerprint="0" * 64)
    wrong_run = _approve(stack, cycle, first, run_id=str(uuid.uuid4()))
    assert (wrong_print.status_code, wrong_run.status_code) == (409, 409)
    assert wrong_print.json()["title"] == "Not the run reviewed"
    missing = _call(stack, "POST", cycle, "approve", key="supervisor", body={"run_id": first["run_id"]})
    assert missing.status_code == 422  # the fingerprint is required
    # The maker adds a voucher and prepares again: the checker's approval of what they saw is refused.
    _seed(pg, 1, cycle)
    second = _prepared(stack, cycle)
    stale = _approve(stack, cycle, first)
    assert stale.status_code == 409, stale.text
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_chunks") == 0
    assert stack.buffr.stats()["calls"].get("disburse", 0) == 0
    refusals = pg.execute("SELECT run_id::text AS run, detail->>'reason' AS reason FROM cycle_run_events "
                          "WHERE action = 'approval_refused' ORDER BY id").fetchall()
    assert [r["reason"] for r in refusals] == ["not the run reviewed"] * 3
    assert refusals[-1]["run"] == second["run_id"]
    approved = _approve(stack, cycle, second)
    assert approved.status_code == 202, approved.text
    done = _wait(stack, cycle)
    assert done["status"] == "completed" and done["progress"]["active"] == 31
    assert _credits(stack) == {r["id"]: 1 for r in pg.execute(
        "SELECT id::text AS id FROM vouchers WHERE cycle = %s", (cycle,))}


def test_approve_racing_a_re_prepare_is_409_and_enqueues_nothing(disburse_env: Any, pg: psycopg.Connection[Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker's approval has taken its snapshot when the maker prepares again (forced at the
    point the approval reads the open run): the approval of the superseded run is a 409, not a 503,
    and nothing is planned or enqueued."""
    from disburse.cycle_run import repository
    from disburse.cycle_run import service as cycle_runs
    from disburse.cycle_run.models import ApproveRequest
    from smartpay.errors import Conflict

    cycle = "2026-07"
    _seed(pg, 10, cycle)
    maker = cycle_runs.Caller(principal="operator", key_id="operator-local", reference="r-maker")
    checker = cycle_runs.Caller(principal="supervisor", key_id="supervisor-local", reference="r-checker")
    first, _ = cycle_runs.prepare(PROGRAMME, cycle, "race-1", maker)
    real, raced = repository.open_run, []

    def open_run_after_a_re_prepare(conn: Any, programme: str, cycle_: str, *, lock: bool = False) -> Any:
        if not raced:  # the approval's first look at the open run: the maker prepares again first
            raced.append(True)
            worker = threading.Thread(target=lambda: raced.append(
                cycle_runs.prepare(PROGRAMME, cycle, "race-2", maker)[0]))
            worker.start()
            worker.join(30)
        return real(conn, programme, cycle_, lock=lock)

    monkeypatch.setattr(repository, "open_run", open_run_after_a_re_prepare)
    with pytest.raises(Conflict) as refused:
        cycle_runs.approve(PROGRAMME, cycle, ApproveRequest(run_id=first.run_id, fingerprint=first.fingerprint),
                           checker)
    assert refused.value.status == 409 and refused.value.title == "Not the run reviewed"
    second = raced[1]
    runs = {str(r["id"]): r["status"] for r in pg.execute("SELECT id, status FROM cycle_runs")}
    assert runs == {str(first.run_id): "cancelled", str(second.run_id): "awaiting_approval"}
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_items") == 0
    assert factories.count(pg, "SELECT count(*) FROM cycle_run_events WHERE action = 'approved'") == 0


# --- supplementary runs --------------------------------------------------------------------------

def test_suspended_then_reinstated_is_paid_once_by_a_supplementary_run(
        run_env: Any, pg: psycopg.Connection[Any]) -> None:
    stack, cycle = run_env, "2026-08"
    people = [factories.beneficiary(pg) for _ in range(3)]
    vouchers = [factories.voucher(pg, p["id"], cycle=cycle)["id"] for p in people]
    pg.execute("UPDATE beneficiaries SET status = 'suspended' WHERE id = %s", (people[0]["id"],))
    run = _prepared(stack, cycle)
    assert run["voucher_count"] == 2
    assert _approve(stack, cycle, run).status_code == 202
    assert _wait(stack, cycle)["status"] == "completed"
    assert _credits(stack) == {v: 1 for v in vouchers[1:]}

    pg.execute("UPDATE beneficiaries SET status = 'active' WHERE id = %s", (people[0]["id"],))  # reinstated
    supplementary = _prepared(stack, cycle, supplementary={"held_eligible_again": True})
    assert (supplementary["kind"], supplementary["voucher_count"], supplementary["status"]) == (
        "supplementary", 1, "awaiting_approval")
    assert _approve(stack, cycle, supplementary, key="payments").status_code == 403  # the maker's principal
    assert _approve(stack, cycle, supplementary).status_code == 202
    done = _wait(stack, cycle)
    assert (done["run_id"], done["status"], done["progress"]["active"]) == (supplementary["run_id"], "completed", 1)
    assert _credits(stack) == {v: 1 for v in vouchers}
    trail = pg.execute("SELECT from_status, to_status, reference FROM voucher_events WHERE voucher_id = %s "
                       "ORDER BY id", (vouchers[0],)).fetchall()
    assert [(t["from_status"], t["to_status"]) for t in trail] == [
        (None, "issued"), ("issued", "held"), ("held", "pending"), ("pending", "active")]
    assert trail[-1]["reference"] == trail[-2]["reference"] == f"cycle-run:{supplementary['run_id']}"
    # Paid: a second supplementary run of the same selection has nothing to pay.
    again = httpx.post(f"{stack.url}/api/v1/cycles/{PROGRAMME}/{cycle}/disbursement/supplementary",
                       json={"held_eligible_again": True}, timeout=30,
                       headers={"x-api-key": _keys(stack)["operator"], "Idempotency-Key": "again"})
    assert again.status_code == 409 and again.json()["title"] == "Nothing to disburse"


def test_a_supplementary_prepare_never_supersedes_the_cycles_run(run_env: Any, pg: psycopg.Connection[Any]) -> None:
    stack, cycle = run_env, "2026-10"
    _seed(pg, 3, cycle)
    run = _prepared(stack, cycle)
    ids = [r["id"] for r in pg.execute("SELECT id::text AS id FROM vouchers WHERE cycle = %s", (cycle,))]
    reply = httpx.post(f"{stack.url}/api/v1/cycles/{PROGRAMME}/{cycle}/disbursement/supplementary",
                       json={"voucher_ids": ids}, timeout=30,
                       headers={"x-api-key": _keys(stack)["operator"], "Idempotency-Key": "supp-over-cycle"})
    assert reply.status_code == 409 and reply.json()["title"] == "Cycle run under way"
    assert _call(stack, "GET", cycle).json()["status"] == "awaiting_approval"
    assert _approve(stack, cycle, run).status_code == 202
    assert _wait(stack, cycle)["status"] == "completed"


def test_a_supplementary_run_of_named_vouchers_refuses_ids_it_cannot_pay(
        run_env: Any, pg: psycopg.Connection[Any]) -> None:
    stack, cycle = run_env, "2026-09"
    b = factories.beneficiary(pg)
    paid = factories.voucher(pg, b["id"], cycle=cycle, status="active")["id"]
    reply = httpx.post(f"{stack.url}/api/v1/cycles/{PROGRAMME}/{cycle}/disbursement/supplementary",
                       json={"voucher_ids": [paid, str(uuid.uuid4())]}, timeout=30,
                       headers={"x-api-key": _keys(stack)["operator"], "Idempotency-Key": "named"})
    assert reply.status_code == 422 and reply.json()["title"] == "Vouchers not payable"
    both = httpx.post(f"{stack.url}/api/v1/cycles/{PROGRAMME}/{cycle}/disbursement/supplementary",
                      json={"voucher_ids": [paid], "held_eligible_again": True}, timeout=30,
                      headers={"x-api-key": _keys(stack)["operator"], "Idempotency-Key": "both"})
    assert both.status_code == 422
    assert factories.count(pg, "SELECT count(*) FROM cycle_runs") == 0


# --- the claim: expiry and the database gate ------------------------------------------------------

def test_an_expired_voucher_at_the_claim_is_expired_and_never_sent(disburse_env: Any, pg: psycopg.Connection[Any],
                                                                   sim: Any) -> None:
    from disburse.logic import batch
    from disburse.models import BatchRequest
    from tests.fixtures_disburse import lambda_context

    fresh, lapsed, lapsed_pending = (factories.voucher(pg, factories.beneficiary(pg)["id"], claimable=True)["id"]
                                     for _ in range(3))
    pg.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (lapsed_pending,))
    pg.execute("UPDATE vouchers SET expires_at = issued_at + interval '1 millisecond' WHERE id = ANY(%s::uuid[])",
               ([lapsed, lapsed_pending],))
    reply = batch.disburse_batch(BatchRequest(voucher_ids=[fresh, lapsed, lapsed_pending]), reference="claim",
                                 context=lambda_context())
    outcomes = {r.voucher_id: (r.outcome, r.status, r.reason) for r in reply.results}
    assert outcomes == {fresh: ("active", "active", None),
                        lapsed: ("skipped", "expired", "not sent: expired before it was sent"),
                        lapsed_pending: ("skipped", "pending", "not sent: expired")}
    assert sim.stats(detail=True)["credits_per_voucher"] == {fresh: 1}
    assert sim.stats()["calls"] == {"disburse": 1}
    audit = pg.execute("SELECT from_status, to_status, source, detail FROM voucher_events WHERE voucher_id = %s "
                       "ORDER BY id", (lapsed,)).fetchall()
    assert [(a["from_status"], a["to_status"], a["source"]) for a in audit] == [
        (None, "issued", "operator"), ("issued", "expired", "disburse")]
    assert audit[-1]["detail"] == {"reason": "expired before it was sent"}


@pytest.mark.parametrize("run_status", [None, "paused", "cancelled", "completed", "awaiting_approval"])
def test_the_database_refuses_pending_outside_an_approved_run(connect_as: Any, pg: psycopg.Connection[Any],
                                                              run_status: str | None) -> None:
    """Even a statement written by hand, as the disburse role (the one that claims), cannot make a
    voucher pending unless its run is approved, enqueuing or running; nor one past its expiry."""
    from smartpay.transitions import transition

    v = factories.voucher(pg, factories.beneficiary(pg)["id"])["id"]
    if run_status is not None:
        factories.in_run(pg, [v], status=run_status)
    conn = connect_as("smartpay_disburse")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="not part of an approved run"):
        conn.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (v,))
    conn.rollback()
    with conn.transaction():
        result = transition(conn, v, "pending", source="disburse", reference="by-hand")
    assert (result.outcome, result.refused) == ("refused", "not part of an approved run")
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v,)).fetchone() == {"status": "issued"}
    assert factories.count(pg, "SELECT count(*) FROM voucher_events WHERE voucher_id = %s", v) == 1


def test_the_database_allows_pending_in_a_running_run_but_never_past_expiry(
        connect_as: Any, pg: psycopg.Connection[Any]) -> None:
    from smartpay.transitions import audit_as

    paid, lapsed = (factories.voucher(pg, factories.beneficiary(pg)["id"], claimable=True)["id"] for _ in range(2))
    pg.execute("UPDATE vouchers SET expires_at = issued_at + interval '1 millisecond' WHERE id = %s", (lapsed,))
    conn = connect_as("smartpay_disburse")
    with conn.transaction():
        audit_as(conn, source="disburse", reference="by-hand")
        conn.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (paid,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="expired"), conn.transaction():
        audit_as(conn, source="disburse", reference="by-hand")
        conn.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (lapsed,))
    statuses = {r["id"]: r["status"] for r in pg.execute(
        "SELECT id::text AS id, status FROM vouchers WHERE id = ANY(%s::uuid[])", ([paid, lapsed],))}
    assert statuses == {paid: "pending", lapsed: "issued"}


def test_reconcile_re_sends_only_a_pending_voucher_of_a_run_under_way(local_stack: Any, pg: psycopg.Connection[Any],
                                                                      sim: Any) -> None:
    under_way, paused = (factories.voucher(pg, factories.beneficiary(pg)["id"], cycle=cycle, status="pending")["id"]
                         for cycle in ("2026-03", "2026-04"))
    with factories.acting_as(pg, "supervisor"):
        pg.execute("UPDATE cycle_runs SET status = 'paused' WHERE cycle = '2026-04'")
    pg.execute("UPDATE vouchers SET status_changed_at = now() - interval '2 hours'")
    reply = local_stack.invoke("ReconcileFunction", {"voucher_ids": [under_way, paused], "redisburse_pending": True})
    assert (reply["checked"], reply["redisbursed"], reply["flagged"]) == (2, 1, 1)
    assert sim.stats(detail=True)["credits_per_voucher"] == {under_way: 1}
    record = pg.execute("SELECT action, detail FROM reconciliation_records WHERE voucher_id = %s", (paused,)).fetchone()
    assert record["action"] == "flagged" and "not part of an approved run" in record["detail"]
    statuses = {r["id"]: r["status"] for r in pg.execute("SELECT id::text AS id, status FROM vouchers")}
    assert statuses == {under_way: "active", paused: "pending"}
