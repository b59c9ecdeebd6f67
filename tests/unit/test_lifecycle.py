"""The voucher state machine: one table, forward only, Buffr's redemption beats a local expiry."""

from hypothesis import given
from hypothesis import strategies as st

from smartpay.lifecycle import EDGES, OPEN, TERMINAL, VoucherStatus, decide, depth, reachable

S = VoucherStatus
statuses = st.sampled_from(list(VoucherStatus))


def test_diagram_edges() -> None:
    assert EDGES[S.ISSUED] == {S.PENDING, S.HELD, S.CANCELLED, S.EXPIRED}
    assert EDGES[S.HELD] == {S.PENDING, S.CANCELLED, S.EXPIRED}
    assert EDGES[S.PENDING] == {S.ACTIVE, S.FAILED}
    assert EDGES[S.ACTIVE] == {S.REDEEMED, S.EXPIRED, S.CANCELLED}
    assert {S.REDEEMED, S.EXPIRED, S.CANCELLED, S.FAILED} == TERMINAL
    assert {S.ISSUED, S.HELD, S.PENDING, S.ACTIVE} == OPEN


def test_depths_follow_the_lifecycle() -> None:
    assert [depth(s) for s in (S.ISSUED, S.HELD, S.PENDING, S.ACTIVE, S.REDEEMED)] == [0, 1, 2, 3, 4]
    assert depth(S.FAILED) == 3 and depth(S.EXPIRED) == 4


def test_held_is_entered_only_before_buffr_and_left_forward_only() -> None:
    """Suspended at payment time → held; reinstated → pending; never back to held once sent."""
    assert decide(S.ISSUED, S.HELD).outcome == "applied"
    assert decide(S.HELD, S.PENDING).outcome == "applied"
    assert decide(S.HELD, S.CANCELLED).outcome == "applied"
    assert decide(S.HELD, S.EXPIRED).outcome == "applied"
    for sent in (S.PENDING, S.ACTIVE, S.REDEEMED, S.FAILED):
        assert decide(sent, S.HELD).outcome == "stale"
    assert decide(S.HELD, S.ISSUED).outcome == "stale"


def test_ineligible_vouchers_are_held_when_suspended_and_cancelled_otherwise() -> None:
    from smartpay.lifecycle import ineligible_target

    assert ineligible_target("suspended") == S.HELD
    assert ineligible_target("deceased") == S.CANCELLED
    assert ineligible_target("active") == S.CANCELLED  # active but no longer enrolled in the programme


def test_forward_jumps_apply_when_reachable() -> None:
    # a lost "activated" webhook must not block a later "redeemed"
    assert decide(S.PENDING, S.REDEEMED).outcome == "applied"
    assert decide(S.ISSUED, S.ACTIVE).outcome == "applied"


def test_backwards_and_sideways_are_stale() -> None:
    assert decide(S.ACTIVE, S.PENDING).outcome == "stale"
    assert decide(S.REDEEMED, S.ACTIVE).outcome == "stale"
    assert decide(S.CANCELLED, S.REDEEMED).outcome == "stale"
    assert decide(S.FAILED, S.ACTIVE).outcome == "stale"
    assert decide(S.REDEEMED, S.EXPIRED).outcome == "stale"


def test_same_status_is_duplicate() -> None:
    for status in VoucherStatus:
        assert decide(status, status).outcome == "duplicate"


def test_redeemed_beats_local_expiry_and_is_flagged() -> None:
    decision = decide(S.EXPIRED, S.REDEEMED)
    assert decision.outcome == "applied"
    assert decision.review_reason and "expired" in decision.review_reason


@given(st.lists(statuses, max_size=30))
def test_no_sequence_moves_a_voucher_backwards(events: list[VoucherStatus]) -> None:
    current = S.ISSUED
    for target in events:
        decision = decide(current, target)
        if decision.applies:
            assert target in reachable(current) or (current, target) == (S.EXPIRED, S.REDEEMED)
            assert depth(target) >= depth(current)
            current = target
        else:
            assert target not in reachable(current)
    # once terminal, only Buffr's redemption of an expired voucher can still move it
    for target in VoucherStatus:
        if current in TERMINAL and decide(current, target).applies:
            assert (current, target) == (S.EXPIRED, S.REDEEMED)


@given(statuses, statuses)
def test_decide_is_total_and_never_raises(current: VoucherStatus, target: VoucherStatus) -> None:
    assert decide(current, target).outcome in {"applied", "duplicate", "stale"}
