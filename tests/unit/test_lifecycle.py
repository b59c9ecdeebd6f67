"""The voucher state machine: one table, forward only, Buffr's redemption beats a local expiry."""

from hypothesis import given
from hypothesis import strategies as st

from smartpay.lifecycle import EDGES, OPEN, TERMINAL, VoucherStatus, decide, depth, reachable

S = VoucherStatus
statuses = st.sampled_from(list(VoucherStatus))


def test_diagram_edges() -> None:
    assert EDGES[S.ISSUED] == {S.PENDING, S.CANCELLED, S.EXPIRED}
    assert EDGES[S.PENDING] == {S.ACTIVE, S.FAILED}
    assert EDGES[S.ACTIVE] == {S.REDEEMED, S.EXPIRED, S.CANCELLED}
    assert {S.REDEEMED, S.EXPIRED, S.CANCELLED, S.FAILED} == TERMINAL
    assert {S.ISSUED, S.PENDING, S.ACTIVE} == OPEN


def test_depths_follow_the_lifecycle() -> None:
    assert [depth(s) for s in (S.ISSUED, S.PENDING, S.ACTIVE, S.REDEEMED)] == [0, 1, 2, 3]
    assert depth(S.FAILED) == 2 and depth(S.EXPIRED) == 3


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
