"""The tenants of an incident: who joins from breaker changes, who has recovered, and the
incident's title (receiver.domain.members)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.breaker import Breaker, BreakerChange, BreakerState, Suppressed, Transition
from receiver.domain.members import (
    SUPPRESSED,
    TRIPPED,
    Member,
    closed_tenants,
    failures,
    incident_title,
    join_reason,
)
from receiver.domain.tiers import Tier

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
S = BreakerState


def opened(tenant: str) -> Breaker:
    return Breaker(tenant_id=tenant, state=S.OPEN, opened_at=T0)


def change(after: Breaker, *events: Transition | Suppressed) -> BreakerChange:
    return BreakerChange(before=Breaker(tenant_id=after.tenant_id), breaker=after, events=events)


def move(tenant: str, src: BreakerState, dst: BreakerState) -> Transition:
    return Transition(tenant_id=tenant, from_state=src, to_state=dst, reason="r", at=T0)


def suppressed(tenant: str) -> Suppressed:
    return Suppressed(tenant_id=tenant, isolated=2, limit=2, at=T0)


def member(state: BreakerState, *, cause: str = TRIPPED, firing: bool = False) -> Member:
    return Member(
        tenant_id="t",
        cause=cause,
        joined_at=T0,
        tier=Tier.GOLD,
        name=None,
        hourly_cost=None,
        admin_email=None,
        breaker_state=state,
        alert_firing=firing,
    )


# --- who fails, who closes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (move("a", S.CLOSED, S.OPEN), {"a": TRIPPED}),
        (move("a", S.HALF_OPEN, S.OPEN), {"a": TRIPPED}),
        # An operator's release landing in open is not a trip.
        (move("a", S.FORCED_OPEN, S.OPEN), {}),
        (move("a", S.FORCED_CLOSED, S.OPEN), {}),
        (move("a", S.CLOSED, S.FORCED_OPEN), {}),
        (move("a", S.OPEN, S.HALF_OPEN), {}),
        (suppressed("a"), {"a": SUPPRESSED}),
    ],
)
def test_failures_are_trips_and_suppressed_trips(
    event: Transition | Suppressed, expected: dict[str, str]
) -> None:
    assert failures([change(opened("a"), event)]) == expected


def test_a_trip_outranks_a_suppression_of_the_same_tenant_in_either_order() -> None:
    trip, guard = move("a", S.CLOSED, S.OPEN), suppressed("a")
    assert failures([change(opened("a"), guard, trip)]) == {"a": TRIPPED}
    assert failures([change(opened("a"), trip, guard)]) == {"a": TRIPPED}


@pytest.mark.parametrize(
    ("state", "closed"),
    [
        (S.CLOSED, True),
        (S.FORCED_CLOSED, True),
        (S.OPEN, False),
        (S.HALF_OPEN, False),
        (S.FORCED_OPEN, False),
    ],
)
def test_closed_tenants_are_those_whose_breaker_ends_closed(
    state: BreakerState, closed: bool
) -> None:
    after = Breaker(
        tenant_id="a",
        state=state,
        opened_at=T0 if state is S.OPEN else None,
        half_open_at=T0 if state is S.HALF_OPEN else None,
    )
    assert closed_tenants([change(after)]) == ({"a"} if closed else set())


# --- recovery ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "cause", "firing", "recovered"),
    [
        (S.CLOSED, TRIPPED, False, True),
        (S.FORCED_CLOSED, TRIPPED, False, True),
        # A tripped tenant's closed breaker is enough, whatever its alert does.
        (S.CLOSED, TRIPPED, True, True),
        (S.OPEN, TRIPPED, False, False),
        (S.HALF_OPEN, TRIPPED, False, False),
        (S.FORCED_OPEN, TRIPPED, False, False),
        # A suppressed tenant was never isolated: its alert must have stopped.
        (S.CLOSED, SUPPRESSED, True, False),
        (S.CLOSED, SUPPRESSED, False, True),
        (S.OPEN, SUPPRESSED, False, False),
    ],
)
def test_recovered(state: BreakerState, cause: str, firing: bool, recovered: bool) -> None:
    assert member(state, cause=cause, firing=firing).recovered is recovered


@given(
    cost=st.none() | st.floats(min_value=0, max_value=1e9),
    hours=st.floats(min_value=0, max_value=1e6),
)
def test_member_cost_is_hourly_cost_times_hours_and_zero_without_a_cost(
    cost: float | None, hours: float
) -> None:
    m = Member("t", TRIPPED, T0, None, None, cost, None, S.OPEN, True)
    assert m.cost(hours) == (cost or 0.0) * hours


def test_join_reasons() -> None:
    assert join_reason(TRIPPED) == "breaker tripped"
    assert join_reason(SUPPRESSED) == "trip suppressed by the mass-isolation guard"


# --- titles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenants", "alertnames", "platform", "title"),
    [
        ({"a": TRIPPED}, ["Down"], [], "Tenant a isolated: Down"),
        ({"a": TRIPPED}, [], [], "Tenant a isolated: probe failures"),
        (
            {"a": SUPPRESSED},
            ["Down"],
            [],
            "Tenant a failing (Down), isolation suppressed by the guard",
        ),
        (
            {"b": TRIPPED, "a": TRIPPED},
            ["X", "Y", "Z", "W"],
            [],
            "2 tenants failing (a, b): X, Y, Z",
        ),
        (
            {t: TRIPPED for t in "dcba"},
            ["X"],
            [],
            "4 tenants failing (a, b, c, ...): X",
        ),
        ({}, [], ["DB", "DB", "API"], "Platform alert API, DB firing"),
        (
            {"a": TRIPPED},
            ["Down"],
            ["DB"],
            "Tenant a isolated: Down; platform alert DB firing",
        ),
    ],
)
def test_incident_title(
    tenants: dict[str, str], alertnames: list[str], platform: list[str], title: str
) -> None:
    assert incident_title(tenants, alertnames, platform) == title


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.sampled_from([TRIPPED])))
def test_a_title_names_at_most_three_tenants(tenants: dict[str, str]) -> None:
    title = incident_title(tenants, ["X"], [])
    shown = sorted(tenants)[:3]
    assert all(t in title for t in shown)
    assert title.endswith(": X") or title == "0 tenants failing (): X"
