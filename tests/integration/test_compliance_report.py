"""The compliance report of a programme cycle: known answers on a small cycle, the arithmetic check
failing on an unbalanced fixture, and the whole report read as the read-only ``auditor`` role."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from smartpay import compliance, compliance_render
from smartpay.transitions import transition
from tests import factories

pytestmark = pytest.mark.integration

CYCLE = ("old_age", "2026-11")


def _voucher(pg, amount: int, *targets: str, beneficiary: dict | None = None, cycle: str = "2026-11") -> str:
    b = beneficiary or factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], amount_cents=amount, cycle=cycle, claimable="pending" in targets)["id"]
    for target in targets:
        with pg.transaction():
            assert transition(pg, v, target, source="operator", reference="fixture").applied
    return v


def _unaudited_voucher(pg, beneficiary_id: str) -> None:
    """A voucher the owner inserted with the audit trigger switched off: no creation row."""
    with pg.transaction():
        pg.execute("ALTER TABLE vouchers DISABLE TRIGGER vouchers_audit_insert")
        pg.execute("""INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, expires_at)
                      VALUES (%s, 'old_age', '2026-11', 500, now() + interval '1 day')""", (beneficiary_id,))
        pg.execute("ALTER TABLE vouchers ENABLE TRIGGER vouchers_audit_insert")


def _emf(name: str, route: str, value: int) -> str:
    return json.dumps({"_aws": {"Timestamp": 0, "CloudWatchMetrics": [{
        "Namespace": "KetchupSmartPay", "Dimensions": [["service", "route"]],
        "Metrics": [{"Name": name, "Unit": "Count"}]}]}, "service": "x", "route": route, name: [value]})


@pytest.fixture()
def small_cycle(pg) -> dict[str, str]:
    """Seven vouchers with known fates (amounts in cents are 1000 x their number)."""
    suspended = factories.beneficiary(pg)
    ids = {
        "v1": _voucher(pg, 1000, "pending", "active", "redeemed"),
        "v2": _voucher(pg, 2000, "pending", "active"),
        "v3": _voucher(pg, 3000, "pending", "failed"),
        "v4": _voucher(pg, 4000),
        "v5": _voucher(pg, 5000, "cancelled", beneficiary=suspended),
        "v6": _voucher(pg, 6000, "pending", "active", "expired"),
        "v7": _voucher(pg, 7000, "pending"),
    }
    pg.execute("UPDATE beneficiaries SET status = 'suspended' WHERE id = %s", (suspended["id"],))
    _voucher(pg, 9000, "pending", "active", cycle="2026-10")  # another cycle: counted nowhere below
    # webhook deliveries of the cycle, 10 ms x i late (i = 1..100), and one rejected (not counted)
    received = datetime(2026, 11, 5, 8, 0, tzinfo=UTC)
    for i in range(1, 101):
        pg.execute("""INSERT INTO webhook_events (webhook_id, type, voucher_id, payload, occurred_at, received_at,
                                                  outcome) VALUES (%s, 'voucher.activated', %s, '{}', %s, %s, %s)""",
                   (f"msg_{i}", ids["v2"], received - timedelta(milliseconds=10 * i), received,
                    "duplicate" if i <= 4 else "applied"))
    pg.execute("""INSERT INTO webhook_events (webhook_id, voucher_id, payload, occurred_at, received_at, outcome)
                  VALUES ('msg_bad', %s, '{}', %s, %s, 'rejected')""",
               (ids["v2"], received - timedelta(hours=5), received))
    # one real reconciliation run: v1 amount mismatch (flagged), v6 healed, v2 matched; a dry run is ignored
    run = pg.execute("INSERT INTO reconciliation_runs (mode, status) VALUES ('full', 'completed') RETURNING id"
                     ).fetchone()["id"]
    dry = pg.execute("INSERT INTO reconciliation_runs (mode, status, dry_run) VALUES ('full', 'completed', true) "
                     "RETURNING id").fetchone()["id"]
    for voucher, match, cls, action in (("v1", False, "amount_mismatch", "flagged"),
                                        ("v6", False, "buffr_ahead", "healed"), ("v2", True, None, "none")):
        pg.execute("""INSERT INTO reconciliation_records (run_id, voucher_id, ketchup_status, match, discrepancy,
                                                          action, ketchup_amount_cents)
                      VALUES (%s, %s, 'active', %s, %s, %s, 1)""", (run, ids[voucher], match, cls, action))
    pg.execute("""INSERT INTO reconciliation_records (run_id, voucher_id, ketchup_status, match, discrepancy, action)
                  VALUES (%s, %s, 'issued', false, 'status_conflict', 'flagged')""", (dry, ids["v4"]))
    return ids


METRIC_LINES = [_emf("IdempotentRequests", "issue", 10), _emf("IdempotencyReplays", "issue", 2),
                _emf("IdempotentRequests", "webhook", 60), _emf("IdempotentRequests", "webhook", 40),
                _emf("IdempotencyReplays", "webhook", 25), _emf("IdempotentRequests", "issue", 4),
                _emf("IdempotentRequests", "disburse", 9),  # not an idempotent route: not reported
                "START RequestId: not a metric line", '{"level": "INFO", "message": "not EMF"}']


def test_rates_and_counts_on_a_small_cycle_have_the_known_answers(small_cycle, pg) -> None:
    r = compliance.report(pg, *CYCLE, metrics=compliance.emf_totals(METRIC_LINES))
    v = r["vouchers"]
    assert v["issued"] == {"count": 7, "amount_cents": 28000}
    assert v["sent"] == {"count": 5, "amount_cents": 1000 + 2000 + 3000 + 6000 + 7000}
    assert {k: v[k]["count"] for k in ("pending", "active", "held", "redeemed", "expired", "cancelled", "failed",
                                       "not_yet_sent")} == {
        "pending": 1, "active": 1, "held": 0, "redeemed": 1, "expired": 1, "cancelled": 1, "failed": 1,
        "not_yet_sent": 1}
    a = r["arithmetic"]
    assert a["ok"] and a["total"] == {"count": 7, "amount_cents": 28000}
    assert a["terms"]["outstanding"] == {"count": 3, "amount_cents": 2000 + 4000 + 7000}
    rates = r["rates"]
    assert rates["success"] | {} == {"credited": 3, "attempted": 5, "rate": 0.6,
                                     "credited_cents": 9000, "attempted_cents": 19000}
    assert rates["idempotency"]["routes"] == {
        "issue": {"requests": 14, "replays": 2, "rate": 0.142857},
        "webhook": {"requests": 100, "replays": 25, "rate": 0.25}}
    lat = rates["webhook_latency"]
    assert (lat["deliveries"], lat["p50_ms"], lat["p95_ms"], lat["p99_ms"]) == (100, 500.0, 950.0, 990.0)
    assert sum(b["count"] for b in lat["histogram"]) == 100
    assert {(d["class"], d["action"], d["count"]) for d in rates["discrepancies"]["by_class"]} == {
        ("amount_mismatch", "flagged", 1), ("buffr_ahead", "healed", 1)}
    assert rates["discrepancies"]["count"] == 2 and rates["discrepancies"]["checked"] == 3
    assert r["eligibility"] == {"held": 0, "cancelled_ineligible": 1, "paid_ineligible": 0, "ok": True}
    assert r["duplicates_prevented"] == {"idempotency_replays": 27, "webhook_duplicates_logged": 4,
                                         "buffr_duplicates_refused": None}
    assert r["review"] == {"vouchers_flagged": 0, "reconciliation_flagged": 1}
    chain = r["audit_chain"]
    assert chain["ok"] and chain["vouchers"] == 7 and chain["events"] == 7 + 3 + 2 + 2 + 1 + 3 + 1 and chain["head"]
    assert compliance.checks(r) == {"arithmetic": True, "no payment to an ineligible beneficiary": True,
                                    "audit chain verifies": True}
    last = r["timeline"]["points"][-1]
    assert {s: last[s] for s in ("issued", "pending", "active", "redeemed", "expired", "cancelled", "failed")} == {
        "issued": 1, "pending": 1, "active": 1, "redeemed": 1, "expired": 1, "cancelled": 1, "failed": 1}


def test_without_a_metrics_source_the_hit_rate_is_unavailable_not_guessed(small_cycle, pg) -> None:
    r = compliance.report(pg, *CYCLE)
    assert r["rates"]["idempotency"]["source"] == "unavailable"
    assert all(x == {"requests": None, "replays": None, "rate": None}
               for x in r["rates"]["idempotency"]["routes"].values())
    assert r["duplicates_prevented"]["idempotency_replays"] is None
    assert "n/a" in compliance_render.to_text(r)


def test_arithmetic_check_fails_on_an_unbalanced_cycle(small_cycle, pg) -> None:
    b = factories.beneficiary(pg)
    _unaudited_voucher(pg, b["id"])
    r = compliance.report(pg, *CYCLE)  # a voucher without its creation row: money out of thin air
    assert not r["arithmetic"]["ok"]
    assert r["arithmetic"]["issued"] == {"count": 7, "amount_cents": 28000}
    assert r["arithmetic"]["total"] == {"count": 8, "amount_cents": 28500}
    assert not compliance.checks(r)["arithmetic"]
    assert "Arithmetic check" in compliance_render.to_text(r) and "FAIL" in compliance_render.to_text(r)
    assert {"section": "arithmetic", "key": "check", "value": "FAIL"} in list(compliance_render.csv_rows(r))


def test_a_voucher_sent_for_a_beneficiary_not_enrolled_fails_the_eligibility_check(small_cycle, pg) -> None:
    """The database refuses this since migration 0011; someone with the owner's rights switches the
    vouchers' guards off to do it anyway, and the report must still show it."""
    other = factories.beneficiary(pg, programme="disability")
    with pg.transaction():  # (transitions would hold it instead of sending it: written by hand)
        pg.execute("ALTER TABLE vouchers DISABLE TRIGGER USER")
        v = _voucher(pg, 100, beneficiary=other)
        pg.execute("UPDATE vouchers SET status = 'pending' WHERE id = %s", (v,))
        pg.execute("""INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference)
                      VALUES (%s, 'issued', 'pending', 'disburse', 'bypassed')""", (v,))
        pg.execute("ALTER TABLE vouchers ENABLE TRIGGER USER")
    r = compliance.report(pg, *CYCLE)
    assert r["eligibility"]["paid_ineligible"] == 1 and not compliance.checks(r)["no payment to an ineligible "
                                                                                 "beneficiary"]


def test_the_report_runs_as_the_read_only_auditor(small_cycle, connect_as) -> None:
    with connect_as("auditor") as conn:
        r = compliance.report(conn, *CYCLE)
        assert r["arithmetic"]["ok"] and r["audit_chain"]["ok"]
        assert conn.execute("SHOW transaction_read_only").fetchone()["transaction_read_only"] == "on"


def test_renderings_are_self_contained(small_cycle, pg) -> None:
    r = compliance.report(pg, *CYCLE, metrics=compliance.emf_totals(METRIC_LINES))
    page = compliance_render.to_html(r)
    assert page.count("<svg") == 3 and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in page and "<link" not in page and r["audit_chain"]["head"] in page
    rows = list(compliance_render.csv_rows(r))
    assert {"section": "rate", "key": "success", "numerator": 3, "denominator": 5, "value": 0.6} in rows
    assert json.loads(json.dumps(r)) == r  # JSON-ready as it is


def test_the_saved_reconcile_event_runs_the_report_as_the_reconcile_role(small_cycle, local_stack) -> None:
    from smartpay_tools import PROJECT_ROOT

    event = json.loads((PROJECT_ROOT / "events/reconcile/report_compliance.json").read_text())
    assert (event["report"]["programme"], event["report"]["cycle"]) == CYCLE
    reply = local_stack.invoke("ReconcileFunction", event)  # DB_ROLE smartpay_reconcile, as deployed
    assert reply["report"] == "compliance" and reply["arithmetic"]["ok"] and reply["audit_chain"]["ok"]
    assert reply["rates"]["success"]["rate"] == 0.6
    assert reply["rates"]["idempotency"]["source"] == "metrics"  # COMPLIANCE_METRICS=cloudwatch (moto here)
    assert "Audit chain: PASS" in reply["text"]


def test_cloudwatch_totals_sum_the_route_metric_over_the_window(aws_env) -> None:
    import boto3
    from moto import mock_aws

    start = datetime.now(UTC) - timedelta(hours=2)
    with mock_aws():
        client = boto3.client("cloudwatch")
        for route, service, requests, replays in (("webhook", "webhook", 7, 3), ("issue", "disburse", 5, 1)):
            for _ in range(requests):
                client.put_metric_data(Namespace="KetchupSmartPay", MetricData=[{
                    "MetricName": "IdempotentRequests", "Value": 1, "Unit": "Count",
                    "Dimensions": [{"Name": "service", "Value": service}, {"Name": "route", "Value": route}]}])
            client.put_metric_data(Namespace="KetchupSmartPay", MetricData=[{
                "MetricName": "IdempotencyReplays", "Value": replays, "Unit": "Count",
                "Dimensions": [{"Name": "service", "Value": service}, {"Name": "route", "Value": route}]}])
        totals = compliance.cloudwatch_totals(client, "KetchupSmartPay", compliance.ROUTE_SERVICES)
        end = datetime.now(UTC)
        assert totals("IdempotentRequests", "webhook", start, end) == 7
        assert totals("IdempotencyReplays", "webhook", start, end) == 3
        assert totals("IdempotentRequests", "issue", start, end) == 5
        assert "disburse" not in compliance.ROUTE_SERVICES  # no per-request route pays: runs do


def test_cli_writes_json_csv_and_html_as_the_auditor(small_cycle, pg_url, tmp_path, capsys) -> None:
    from smartpay_tools.cli import main

    files = {kind: tmp_path / f"compliance.{kind}" for kind in ("json", "csv", "html")}
    log = tmp_path / "functions.log"
    log.write_text("\n".join(METRIC_LINES) + "\n")
    assert main(["--database-url", pg_url, "report", "--compliance", "--programme", "old_age", "--cycle", "2026-11",
                 "--json", str(files["json"]), "--csv", str(files["csv"]), "--html", str(files["html"]),
                 "--metrics-log", str(log)]) == 0
    out = capsys.readouterr().out
    assert "Arithmetic check" in out and "PASS" in out and "60.00 %" in out and "25.00 %" in out
    saved = json.loads(files["json"].read_text())
    assert saved["arithmetic"]["ok"] and saved["rates"]["idempotency"]["routes"]["webhook"]["rate"] == 0.25
    assert "section,key,count,amount_cents" in files["csv"].read_text()
    assert files["html"].read_text().startswith("<!doctype html>")


def test_cli_exits_1_when_a_check_fails(small_cycle, pg, pg_url, capsys) -> None:
    from smartpay_tools.cli import main

    b = factories.beneficiary(pg)
    _unaudited_voucher(pg, b["id"])
    assert main(["--database-url", pg_url, "report", "--compliance", "--programme", "old_age",
                 "--cycle", "2026-11"]) == 1
    assert "FAIL" in capsys.readouterr().out
