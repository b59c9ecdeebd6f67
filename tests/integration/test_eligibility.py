"""Eligibility at every payment point: issue, single disburse, batch disburse, the registry, reconcile.

A beneficiary may be paid a voucher only while ``active`` and enrolled in its programme. A
suspended one's voucher is held (nothing sent) and paid once reinstated; a deceased one's is
cancelled for good; one already at Buffr is flagged for review. Real PostgreSQL, the Buffr
simulator over HTTP and, where a route is involved, the local gateway.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests import factories
from tests.fixtures_disburse import lambda_context

pytestmark = pytest.mark.integration


def _post(url: str, key: str, path: str, body: object = None, headers: dict | None = None) -> httpx.Response:
    h = {"content-type": "application/json", "x-api-key": key, **(headers or {})}
    return httpx.post(f"{url}{path}", headers=h, content=json.dumps(body) if body is not None else None, timeout=60)


def _voucher(pg: Any, voucher_id: str) -> dict[str, Any]:
    return pg.execute("SELECT status, failure_reason, review_reason FROM vouchers WHERE id = %s",
                      (voucher_id,)).fetchone()


def _trail(pg: Any, voucher_id: str) -> list[tuple]:
    rows = pg.execute("SELECT from_status, to_status, source, detail FROM voucher_events WHERE voucher_id = %s "
                      "ORDER BY id", (voucher_id,)).fetchall()
    return [(r["from_status"], r["to_status"], r["source"], (r["detail"] or {}).get("reason")) for r in rows]


def _registry_update(pg: Any, beneficiary_id: str, *, triggers: bool = True, **changes: str) -> None:
    """Change a beneficiary as the registry does. ``triggers=False``: as if the registry's trigger
    had not acted (a change racing the payment), so the payment point's own check must hold."""
    sets = ", ".join(f"{k} = %({k})s" for k in changes)
    with pg.transaction():
        if not triggers:
            pg.execute("SET LOCAL session_replication_role = replica")
        pg.execute(f"UPDATE beneficiaries SET {sets} WHERE id = %(id)s", {**changes, "id": beneficiary_id})


# --- issue ---------------------------------------------------------------------------------------

def test_issue_under_a_programme_not_enrolled_is_422_naming_programme(gateway_url, api_keys, pg) -> None:
    child = factories.beneficiary(pg, programme="child_grant")
    body = {"beneficiary_id": child["id"], "amount_cents": 140000, "currency": "NAD", "programme": "old_age",
            "cycle": "2026-11", "expires_at": "2030-01-31T23:59:59+02:00"}
    reply = _post(gateway_url, api_keys["operator"], "/api/v1/vouchers", body,
                  {"Idempotency-Key": f"enrol-{uuid.uuid4()}"})
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["errors"] == [{"location": "body.programme",
                                  "message": "beneficiary is not enrolled in old_age"}]
    assert factories.count(pg, "SELECT count(*) FROM vouchers") == 0
    assert factories.count(pg, "SELECT count(*) FROM voucher_events") == 0
    ok = _post(gateway_url, api_keys["operator"], "/api/v1/vouchers",
               {**body, "programme": "child_grant", "amount_cents": 35000},
               {"Idempotency-Key": f"enrol-{uuid.uuid4()}"})
    assert ok.status_code == 201, ok.text


def test_payroll_rows_under_another_programme_are_rejected_with_line_and_reason(pg, tmp_path) -> None:
    from smartpay_tools.data import payroll_import

    child = factories.beneficiary(pg, programme="child_grant")
    path = tmp_path / "payroll.csv"
    path.write_text("id_number,first_name,last_name,msisdn,region,programme,cycle,amount_cents\n"
                    f"{child['id_number']},A,B,{child['msisdn']},Oshana,old_age,2030-11,140000\n"
                    "44050267085,Rauna,Shilongo,+264811110000,Oshana,old_age,2030-11,140000\n")
    report = payroll_import.import_file(pg.info.dsn, path)
    assert report.rejected == [(2, "beneficiary is not enrolled in old_age")]
    assert report.vouchers_issued == 1  # the newcomer is enrolled in the payroll's programme
    # the rejected row wrote nothing: the child is still enrolled in child_grant and has no voucher
    assert pg.execute("SELECT programme FROM beneficiaries WHERE id = %s", (child["id"],)).fetchone() == {
        "programme": "child_grant"}
    assert factories.count(pg, "SELECT count(*) FROM vouchers WHERE beneficiary_id = %s", child["id"]) == 0


# --- the claim (send pipeline, on vouchers of a run under way) -------------------------------------

def _send(voucher_id: str, reference: str) -> Any:
    from disburse.logic import batch
    from disburse.models import BatchRequest

    return batch.disburse_batch(BatchRequest(voucher_ids=[voucher_id]), reference=reference,
                                context=lambda_context()).results[0]


@pytest.mark.parametrize("triggers", [True, False], ids=["registry-trigger", "payment-point-check"])
def test_suspended_between_issue_and_disburse_is_held_then_paid_once_reinstated(
        disburse_env, pg, sim, triggers) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], claimable=True)["id"]
    _registry_update(pg, b["id"], status="suspended", triggers=triggers)
    item = _send(v, "r1")
    assert (item.outcome, item.status, item.reason) == ("ineligible", "held", "not sent: beneficiary is suspended")
    assert sim.stats()["calls"].get("disburse", 0) == 0
    assert _voucher(pg, v) == {"status": "held", "failure_reason": "beneficiary is suspended", "review_reason": None}
    holder = "registry" if triggers else "disburse"
    assert _trail(pg, v) == [(None, "issued", "operator", None), ("issued", "held", holder, "beneficiary is suspended")]
    # Still suspended: asked again, still nothing sent.
    assert _send(v, "r2").outcome == "ineligible"
    assert sim.stats()["calls"].get("disburse", 0) == 0
    _registry_update(pg, b["id"], status="active")
    assert _send(v, "r3").outcome == "active"
    assert _voucher(pg, v) == {"status": "active", "failure_reason": None, "review_reason": None}
    assert _send(v, "r4").outcome == "skipped"  # active: never sent again
    assert sim.stats(detail=True)["credits_per_voucher"] == {v: 1}
    assert [t[:2] for t in _trail(pg, v)][2:] == [("held", "pending"), ("pending", "active")]


@pytest.mark.parametrize("triggers", [True, False], ids=["registry-trigger", "payment-point-check"])
def test_deceased_is_cancelled_for_good_and_never_sent(disburse_env, pg, sim, triggers) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], claimable=True)["id"]
    _registry_update(pg, b["id"], status="deceased", triggers=triggers)
    assert _send(v, "r1").outcome == "ineligible"
    assert _voucher(pg, v)["status"] == "cancelled"
    _registry_update(pg, b["id"], status="active")  # a registry correction does not revive it
    assert _send(v, "r2").outcome == "skipped"
    assert _voucher(pg, v)["status"] == "cancelled"
    assert sim.stats()["calls"].get("disburse", 0) == 0


def test_moved_to_another_programme_cancels_the_old_programmes_open_voucher(pg) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"])["id"]
    _registry_update(pg, b["id"], programme="disability")
    assert _voucher(pg, v)["status"] == "cancelled"
    assert _trail(pg, v)[-1] == ("issued", "cancelled", "registry", "beneficiary is not enrolled in old_age")


# --- the registry acts at once -------------------------------------------------------------------

def test_registry_update_holds_cancels_and_flags_open_vouchers(pg) -> None:
    suspended, deceased = factories.beneficiary(pg), factories.beneficiary(pg)
    s_issued = factories.voucher(pg, suspended["id"], cycle="2026-10")["id"]
    s_active = factories.voucher(pg, suspended["id"], cycle="2026-09", status="active")["id"]
    d_issued = factories.voucher(pg, deceased["id"], cycle="2026-10")["id"]
    d_held = factories.voucher(pg, deceased["id"], cycle="2026-11", status="held")["id"]
    d_pending = factories.voucher(pg, deceased["id"], cycle="2026-08", status="pending")["id"]
    d_active = factories.voucher(pg, deceased["id"], cycle="2026-09", status="active")["id"]
    d_redeemed = factories.voucher(pg, deceased["id"], cycle="2026-07", status="redeemed")["id"]
    with pg.transaction():  # one registry statement for both, as an import chunk does
        pg.execute("UPDATE beneficiaries SET status = CASE id WHEN %s THEN 'suspended' ELSE 'deceased' END "
                   "WHERE id IN (%s, %s)", (suspended["id"], suspended["id"], deceased["id"]))
    assert _voucher(pg, s_issued)["status"] == "held"
    assert _voucher(pg, d_issued)["status"] == "cancelled" and _voucher(pg, d_held)["status"] == "cancelled"
    for flagged, reason in ((s_active, "beneficiary is suspended"), (d_pending, "beneficiary is deceased"),
                            (d_active, "beneficiary is deceased")):
        row = _voucher(pg, flagged)
        assert row["status"] in ("active", "pending")
        assert row["review_reason"] == f"{reason} after the voucher was sent to Buffr: check it with Buffr"
    assert _voucher(pg, d_redeemed) == {"status": "redeemed", "failure_reason": None, "review_reason": None}
    assert _trail(pg, d_held)[-1] == ("held", "cancelled", "registry", "beneficiary is deceased")


def test_registry_import_acts_on_open_vouchers(pg, tmp_path) -> None:
    from smartpay_tools.data import registry_import

    b = factories.beneficiary(pg, first_name="Selma", last_name="Angula", region="Oshana")
    v = factories.voucher(pg, b["id"])["id"]
    path = tmp_path / "registry.csv"
    path.write_text("id_number,first_name,last_name,msisdn,region,programme,status\n"
                    f"{b['id_number']},Selma,Angula,{b['msisdn']},Oshana,old_age,deceased\n")
    report = registry_import.import_file(pg.info.dsn, path)
    assert report.upserted == 1 and report.rejected == []
    assert _voucher(pg, v)["status"] == "cancelled"


# --- batch disburse --------------------------------------------------------------------------------

def test_batch_of_1000_with_50_turning_ineligible_mid_way_credits_exactly_950(
        disburse_env, pg, sim, monkeypatch) -> None:
    from disburse import repository
    from disburse.logic import batch
    from disburse.models import BatchRequest

    people = [factories.beneficiary(pg) for _ in range(1000)]
    ids = [factories.voucher(pg, p["id"], claimable=True)["id"] for p in people]
    # The last 50 of the batch's order turn ineligible after its first turn: 25 suspended, 25 deceased.
    late = {p["id"]: ("suspended" if i % 2 else "deceased") for i, p in enumerate(people[-50:])}
    disburse_env["reconfigure"](BUFFR_CONCURRENCY="20")
    real, turns = repository.settle_and_claim, []

    def settle_and_claim(conn, settle, voucher_ids, reference):
        turns.append(len(voucher_ids))
        if len(turns) == 2:  # mid-way: the registry changes while the batch runs
            with psycopg.connect(pg.info.dsn, autocommit=True) as registry:
                for beneficiary_id, status in late.items():
                    registry.execute("UPDATE beneficiaries SET status = %s WHERE id = %s", (status, beneficiary_id))
        return real(conn, settle, voucher_ids, reference)

    monkeypatch.setattr(repository, "settle_and_claim", settle_and_claim)
    reply = batch.disburse_batch(BatchRequest(voucher_ids=ids), reference="batch-eligibility",
                                   context=lambda_context(120))
    assert (reply.requested, reply.succeeded, reply.ineligible, reply.failed, reply.pending) == (1000, 950, 50, 0, 0)
    assert sim.stats()["credits"] == 950 and not sim.stats()["double_credited"]
    late_vouchers = set(ids[-50:])
    reported = {r.voucher_id: r for r in reply.results if r.outcome == "ineligible"}
    assert set(reported) == late_vouchers
    for i, vid in enumerate(ids[-50:]):
        status = "suspended" if i % 2 else "deceased"
        assert reported[vid].reason == f"not sent: beneficiary is {status}"
        assert reported[vid].status == ("held" if status == "suspended" else "cancelled")
    rows = pg.execute("SELECT status, count(*) AS n FROM vouchers GROUP BY status").fetchall()
    assert {r["status"]: r["n"] for r in rows} == {"active": 950, "held": 25, "cancelled": 25}


# --- reconcile --------------------------------------------------------------------------------------

def test_reconcile_never_resends_an_ineligible_voucher(local_stack, pg, sim) -> None:
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="pending")["id"]
    pg.execute("UPDATE vouchers SET status_changed_at = now() - interval '2 hours' WHERE id = %s", (v,))
    _registry_update(pg, b["id"], status="deceased")
    assert _voucher(pg, v)["review_reason"].startswith("beneficiary is deceased after the voucher was sent")
    reply = local_stack.invoke("ReconcileFunction", {"voucher_ids": [v], "redisburse_pending": True})
    assert reply["checked"] == 1 and reply["redisbursed"] == 0 and reply["flagged"] == 1
    record = pg.execute("SELECT discrepancy, action, detail FROM reconciliation_records WHERE run_id = %s",
                        (reply["run_id"],)).fetchone()
    assert record["discrepancy"] == "pending_unknown" and record["action"] == "flagged"
    assert "beneficiary is deceased" in record["detail"]
    assert sim.stats()["calls"].get("disburse", 0) == 0 and sim.stats()["credits"] == 0
    # disburse asked Buffr again before any re-send: never received, so the lifecycle cancels it
    assert _voucher(pg, v)["status"] == "cancelled"
