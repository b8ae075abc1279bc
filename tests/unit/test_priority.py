from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.priority import (
    SLA,
    ack_due_at,
    compute_priority,
    escalate,
    response_sla,
    tier_or_default,
)
from receiver.domain.tiers import Priority, Tier

P, G, S, B = Tier.PLATINUM, Tier.GOLD, Tier.SILVER, Tier.BRONZE
P0, P1, P2 = Priority.P0, Priority.P1, Priority.P2

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def test_sla_table_matches_contract() -> None:
    assert SLA == {P: 15 * MIN, G: 60 * MIN, S: 4 * HOUR, B: 8 * HOUR}


@pytest.mark.parametrize(
    ("given_tier", "expected"),
    [
        (P, P),
        (G, G),
        (S, S),
        (B, B),
        ("platinum", P),
        ("gold", G),
        (" Silver ", S),
        ("BRONZE", B),
        (None, B),
        ("", B),
        ("diamond", B),
        ("P0", B),
    ],
)
def test_tier_or_default(given_tier: Tier | str | None, expected: Tier) -> None:
    assert tier_or_default(given_tier) is expected


@pytest.mark.parametrize(
    ("tiers", "platform_alert", "expected"),
    [
        # single tenant, by tier
        ([P], False, P0),
        ([G], False, P1),
        ([S], False, P2),
        ([B], False, P2),
        ([None], False, P2),  # unknown tenant counts as bronze
        # no tenants
        ([], False, P2),
        ([], True, P0),  # platform alert alone
        # platform alert beats everything
        ([B], True, P0),
        ([S] * 3, True, P0),
        # count boundaries 4/5 (P2 -> P1)
        ([B] * 4, False, P2),
        ([B] * 5, False, P1),
        ([S] * 4, False, P2),
        ([None] * 5, False, P1),
        # count boundaries 9/10 (P1 -> P0)
        ([B] * 9, False, P1),
        ([B] * 10, False, P0),
        ([None] * 10, False, P0),
        ([S] * 9 + [None], False, P0),
        # mixes
        ([B, B, G], False, P1),
        ([B, S, G, P], False, P0),
        ([G] * 4, False, P1),
        ([G] * 9, False, P1),
        ([G] * 10, False, P0),
        ([B] * 3 + [P], False, P0),
        ([None, None, P], False, P0),
        ([None, G], False, P1),
        ([S] * 8 + [G], False, P1),
    ],
)
def test_compute_priority(
    tiers: list[Tier | None], platform_alert: bool, expected: Priority
) -> None:
    assert compute_priority(tiers=tiers, platform_alert=platform_alert) is expected


@pytest.mark.parametrize(
    ("current", "computed", "expected"),
    [
        (None, P0, P0),
        (None, P1, P1),
        (None, P2, P2),
        (P2, P2, P2),
        (P2, P1, P1),
        (P2, P0, P0),
        (P1, P2, P1),
        (P1, P1, P1),
        (P1, P0, P0),
        (P0, P2, P0),
        (P0, P1, P0),
        (P0, P0, P0),
    ],
)
def test_escalate(current: Priority | None, computed: Priority, expected: Priority) -> None:
    assert escalate(current, computed) is expected


tier_or_none = st.one_of(st.none(), st.sampled_from(Tier))
tier_lists = st.lists(tier_or_none, max_size=15)


@given(st.lists(st.tuples(tier_lists, st.booleans()), min_size=1, max_size=20))
def test_escalated_priority_is_monotonic(steps: list[tuple[list[Tier | None], bool]]) -> None:
    current: Priority | None = None
    most_urgent_seen = P2
    for tiers, platform in steps:
        computed = compute_priority(tiers=tiers, platform_alert=platform)
        new = escalate(current, computed)
        if current is not None:
            assert new.rank <= current.rank  # never de-escalates
        assert new.rank <= computed.rank
        if computed.more_urgent_than(most_urgent_seen):
            most_urgent_seen = computed
        current = new
    # ... and it lands exactly on the most urgent priority ever computed
    assert current is most_urgent_seen


@given(tier_lists, tier_or_none, st.booleans())
def test_a_tenant_joining_never_lowers_the_computed_priority(
    tiers: list[Tier | None], joining: Tier | None, platform: bool
) -> None:
    before = compute_priority(tiers=tiers, platform_alert=platform)
    after = compute_priority(tiers=[*tiers, joining], platform_alert=platform)
    assert after.rank <= before.rank


@pytest.mark.parametrize(
    ("tiers", "priority", "expected"),
    [
        ([P], P0, 15 * MIN),
        ([G], P1, 60 * MIN),
        ([S], P2, 4 * HOUR),
        ([B], P2, 8 * HOUR),
        ([None], P2, 8 * HOUR),  # unknown -> bronze
        # the strictest affected tier wins
        ([B, S], P2, 4 * HOUR),
        ([B, None, G, S], P1, 60 * MIN),
        ([S, P, G], P0, 15 * MIN),
        # P0 by count: 15 min at most even with only bronze tenants
        ([B] * 10, P0, 15 * MIN),
        ([None] * 12, P0, 15 * MIN),
        # P0 by platform alert, or escalated by the mass-isolation guard
        ([S], P0, 15 * MIN),
        ([G, G], P0, 15 * MIN),
        # P1 by count keeps the strictest tier's SLA (the contract only caps P0)
        ([B] * 5, P1, 8 * HOUR),
        ([S] * 5 + [B], P1, 4 * HOUR),
        # platform-only incident
        ([], P0, 15 * MIN),
        ([], P2, 15 * MIN),
    ],
)
def test_response_sla(tiers: list[Tier | None], priority: Priority, expected: timedelta) -> None:
    assert response_sla(tiers=tiers, priority=priority) == expected


@given(tier_lists, st.booleans())
def test_response_sla_never_exceeds_strictest_tier(
    tiers: list[Tier | None], platform: bool
) -> None:
    priority = compute_priority(tiers=tiers, platform_alert=platform)
    sla = response_sla(tiers=tiers, priority=priority)
    for t in tiers:
        assert sla <= SLA[tier_or_default(t)]
    if priority is P0:
        assert sla == 15 * MIN


def test_ack_due_at_adds_sla() -> None:
    opened = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert ack_due_at(opened_at=opened, tiers=[G, B], priority=P1) == opened + HOUR
    assert ack_due_at(opened_at=opened, tiers=[B] * 10, priority=P0) == opened + 15 * MIN


def test_ack_due_at_keeps_the_offset() -> None:
    cet = timezone(timedelta(hours=1))
    opened = datetime(2026, 11, 24, 11, 0, tzinfo=cet)
    due = ack_due_at(opened_at=opened, tiers=[S], priority=P2)
    assert due == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def test_ack_due_at_rejects_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ack_due_at(opened_at=datetime(2026, 11, 24, 10, 0), tiers=[B], priority=P2)
