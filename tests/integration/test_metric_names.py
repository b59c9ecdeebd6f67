"""One metric name per concept across functions: each idempotent route counts its answered requests
and its replays under the same two names with a ``route`` dimension, and the compliance report
reads its hit rates from exactly those lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smartpay import compliance
from tests import factories
from tests.fixtures_disburse import lambda_context

pytestmark = pytest.mark.integration


def _totals(capsys, route: str) -> tuple[float | None, float | None]:
    out = capsys.readouterr().out.splitlines()
    assert not any('"IdempotentReplays"' in line for line in out)  # the old second name is gone
    totals = compliance.emf_totals(out)
    return (totals("IdempotentRequests", route, None, None),  # type: ignore[arg-type]
            totals("IdempotencyReplays", route, None, None))  # type: ignore[arg-type]


def test_webhook_counts_requests_and_replays_under_the_shared_names(webhook, pg, capsys) -> None:
    from smartpay_tools.buffr_sim.webhook_sender import payload

    v = factories.voucher(pg, factories.beneficiary(pg)["id"], status="pending")
    body = payload("voucher.activated", v["id"], delivery_id="bfr_m1")
    capsys.readouterr()
    assert not webhook.deliver(body, webhook_id="msg_metric_1").replayed
    assert webhook.deliver(body, webhook_id="msg_metric_1").replayed
    assert webhook.deliver(body, webhook_id="msg_metric_1").replayed
    assert _totals(capsys, "webhook") == (3.0, 2.0)


def test_the_issue_route_counts_under_the_shared_names(disburse_env, pg, capsys) -> None:
    from disburse.logic import issue
    from disburse.models import IssueRequest

    b = factories.beneficiary(pg)
    request = IssueRequest(beneficiary_id=b["id"], programme="old_age", cycle="2026-12", amount_cents=1000,
                           currency="NAD", expires_at=datetime.now(UTC) + timedelta(days=30))
    capsys.readouterr()
    for _ in range(3):
        issue.issue(request, "issue-key-metrics", reference="m", context=lambda_context())
    assert _totals(capsys, "issue") == (3.0, 2.0)


def test_verify_counts_matches_and_mismatches(db_env, pg, capsys) -> None:
    """Probing ID numbers with wrong details shows up as ``BeneficiaryNoMatches`` (the alarmable
    signal of a walked key); a full match counts as ``BeneficiaryMatches``."""
    import json
    import time

    from beneficiaries.handler import lambda_handler
    from smartpay_tools.local.events import api_event, buffr_authorizer
    from smartpay_tools.local.lambda_runtime import FakeLambdaContext

    b = factories.beneficiary(pg, first_name="Ndapewa", last_name="Amukoto")

    def verify(body: dict) -> dict:
        event = api_event("POST", "/api/v1/beneficiaries/verify", headers={"content-type": "application/json"},
                          body=json.dumps(body), authorizer=buffr_authorizer())
        reply = lambda_handler(event, FakeLambdaContext("beneficiaries", 512, "req-m", time.time() * 1000 + 29000))
        assert reply["statusCode"] == 200, reply["body"]
        return json.loads(reply["body"])

    capsys.readouterr()
    assert verify({"id_number": b["id_number"], "full_name": "Ndapewa Amukoto"})["match"] is True
    assert verify({"id_number": b["id_number"], "full_name": "Someone Else"}) == {"match": False}
    assert verify({"id_number": "99999999999"}) == {"match": False}
    totals = compliance.emf_totals(capsys.readouterr().out.splitlines())
    assert [totals(name, "", None, None) for name in  # type: ignore[arg-type]
            ("BeneficiaryVerifications", "BeneficiaryMatches", "BeneficiaryNoMatches")] == [3.0, 1.0, 2.0]
