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


def test_disburse_and_issue_routes_count_under_the_same_names(disburse_env, pg, sim, capsys) -> None:
    from disburse import service
    from disburse.models import IssueRequest

    v = factories.voucher(pg, factories.beneficiary(pg)["id"])
    capsys.readouterr()
    for _ in range(2):
        service.disburse(v["id"], reference="m", context=lambda_context())
    assert _totals(capsys, "disburse") == (2.0, 1.0)
    b = factories.beneficiary(pg)
    request = IssueRequest(beneficiary_id=b["id"], programme="old_age", cycle="2026-12", amount_cents=1000,
                           currency="NAD", expires_at=datetime.now(UTC) + timedelta(days=30))
    for _ in range(3):
        service.issue(request, "issue-key-metrics", reference="m", context=lambda_context())
    assert _totals(capsys, "issue") == (3.0, 2.0)
