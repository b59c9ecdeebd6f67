"""Property: any ordering and duplication of a voucher's events ends at the furthest status.

Each example takes one true Buffr history of a pending voucher, delivers its events in any order,
some several times (a retry with the same webhook id, or the same event under a new id), through
the warm handler (signature, idempotency, state machine, PostgreSQL). The oracle is independent of
the code under test: a plain depth table.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpay_tools.buffr_sim.webhook_sender import payload
from tests import factories

pytestmark = pytest.mark.integration

DEPTH = {"pending": 1, "active": 2, "failed": 2, "redeemed": 3, "expired": 3, "cancelled": 3}
HISTORIES = [
    [("voucher.activated", "active"), ("voucher.redeemed", "redeemed")],
    [("voucher.delivered", "active"), ("voucher.expired", "expired")],
    [("voucher.activated", "active"), ("voucher.cancelled", "cancelled")],
    [("voucher.failed", "failed")],
    [("voucher.activated", "active")],
]


@st.composite
def deliveries(draw):
    history = draw(st.sampled_from(HISTORIES))
    copies = []
    for index, _ in enumerate(history):
        for copy in range(draw(st.integers(1, 3))):
            # copy 0 is the original; later copies are a retry (same id) or a re-emission (new id)
            copies.append((index, "orig" if copy == 0 else draw(st.sampled_from(["retry", "reemit"])) + str(copy)))
    return history, draw(st.permutations(copies))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries())
def test_final_status_is_the_furthest_and_audit_rows_only_for_real_changes(webhook, pg, case) -> None:
    history, order = case
    b = factories.beneficiary(pg)
    v = factories.voucher(pg, b["id"], status="pending")["id"]
    bodies = [payload(kind, v, delivery_id="bfr", **({"amount_cents": 140000, "channel": "wallet"}
                                                      if kind == "voucher.redeemed" else {}))
              for kind, _ in history]  # a retry resends the very same body
    current, changes = "pending", 0
    for index, copy in order:
        target = history[index][1]
        webhook_id = f"msg_{v}_{index}" + ("" if not copy.startswith("reemit") else f"_{copy}")
        r = webhook.deliver(bodies[index], webhook_id=webhook_id)
        assert r.status == 200, r.body
        if DEPTH[target] > DEPTH[current]:
            current, changes = target, changes + 1
    assert current == history[-1][1]
    assert pg.execute("SELECT status FROM vouchers WHERE id = %s", (v,)).fetchone()["status"] == current
    rows = pg.execute("SELECT from_status, to_status FROM voucher_events WHERE voucher_id = %s AND source = "
                      "'webhook' ORDER BY id", (v,)).fetchall()
    assert len(rows) == changes
    assert all(DEPTH[r["to_status"]] > DEPTH[r["from_status"]] for r in rows)  # never a regression
    applied = factories.count(pg, "SELECT count(*) FROM webhook_events WHERE voucher_id = %s AND outcome = "
                              "'applied'", v)
    assert applied == changes
