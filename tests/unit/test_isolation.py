"""Isolation spans read from an incident's breaker.transition rows, and the impact built
from them (receiver.domain.isolation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.domain.breaker import BreakerState
from receiver.domain.incident import IsolationSpan
from receiver.domain.isolation import AuditEntry, incident_impact, isolation_spans
from receiver.domain.members import TRIPPED, Member
from receiver.domain.tiers import Tier

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def member(tenant: str = "a", *, joined: datetime = T0, cost: float | None = 10.0) -> Member:
    return Member(
        tenant_id=tenant,
        cause=TRIPPED,
        joined_at=joined,
        tier=Tier.GOLD,
        name=None,
        hourly_cost=cost,
        admin_email=None,
        breaker_state=BreakerState.OPEN,
        alert_firing=True,
    )


def row(src: str, dst: str, written: datetime, *, tenant: str = "a", **details: Any) -> AuditEntry:
    return AuditEntry(
        id=0,
        occurred_at=written,
        actor="system",
        action="breaker.transition",
        tenant_id=tenant,
        details={"from": src, "to": dst, **details},
    )


def span(start: datetime, end: datetime | None, tenant: str = "a") -> IsolationSpan:
    return IsolationSpan(tenant_id=tenant, tier=Tier.GOLD, hourly_cost=10.0, start=start, end=end)


@pytest.mark.parametrize(
    ("rows", "resolved_at", "spans"),
    [
        pytest.param([], None, [], id="no transitions"),
        pytest.param([row("closed", "open", T0)], None, [span(T0, None)], id="still open"),
        pytest.param(
            [row("closed", "open", T0), row("half_open", "closed", T0 + H)],
            None,
            [span(T0, T0 + H)],
            id="closed again",
        ),
        pytest.param(
            [row("closed", "open", T0), row("open", "half_open", T0 + H)],
            None,
            [span(T0, None)],
            id="half-open still counts",
        ),
        pytest.param(
            [row("closed", "open", T0)],
            T0 + 2 * H,
            [span(T0, T0 + 2 * H)],
            id="an open span ends at resolution",
        ),
        pytest.param(
            [row("closed", "open", T0), row("open", "closed", T0 + 3 * H)],
            T0 + 2 * H,
            [span(T0, T0 + 2 * H)],
            id="capped at resolution",
        ),
        pytest.param(
            [row("open", "closed", T0 + H)],
            None,
            [span(T0 - H, T0 + H)],
            id="isolated before joining counts from joining",
        ),
        pytest.param(
            [
                row("closed", "open", T0),
                row("open", "closed", T0 + H),
                row("closed", "forced_open", T0 + 2 * H),
            ],
            None,
            [span(T0, T0 + H), span(T0 + 2 * H, None)],
            id="two spans",
        ),
        pytest.param(
            [row("closed", "open", T0 + H, at=T0.isoformat())],
            None,
            [span(T0, None)],
            id="the transition's own time wins over the row's",
        ),
        pytest.param(
            [row("closed", "open", T0, at="not a time"), row("open", "closed", T0 + H, at="x")],
            None,
            [span(T0, T0 + H)],
            id="an unreadable time falls back to the row's",
        ),
        pytest.param(
            [row("closed", "open", T0), row("open", "closed", T0 - H)],
            None,
            [span(T0, T0)],
            id="clocks apart: never negative",
        ),
    ],
)
def test_isolation_spans(
    rows: list[AuditEntry], resolved_at: datetime | None, spans: list[IsolationSpan]
) -> None:
    joined = T0 - H
    assert isolation_spans([member(joined=joined)], rows, resolved_at=resolved_at) == spans


def test_spans_are_per_member() -> None:
    rows = [row("closed", "open", T0, tenant="a"), row("closed", "open", T0 + H, tenant="b")]
    got = isolation_spans([member("a"), member("b")], rows, resolved_at=None)
    assert got == [span(T0, None, "a"), span(T0 + H, None, "b")]
    assert isolation_spans([member("c")], rows, resolved_at=None) == []


@given(
    moves=st.lists(
        st.tuples(
            st.sampled_from([s.value for s in BreakerState]),
            st.integers(min_value=0, max_value=10_000),
        ),
        max_size=12,
    ),
    resolved=st.none() | st.integers(min_value=0, max_value=10_000),
)
def test_spans_are_ordered_and_within_the_incident(
    moves: list[tuple[str, int]], resolved: int | None
) -> None:
    rows, prev = [], "closed"
    for dst, minute in sorted(moves, key=lambda m: m[1]):
        rows.append(row(prev, dst, T0 + timedelta(minutes=minute)))
        prev = dst
    resolved_at = None if resolved is None else T0 + timedelta(minutes=resolved)
    spans = isolation_spans([member()], rows, resolved_at=resolved_at)
    for s in spans:
        assert s.end is None or s.start <= s.end
        if resolved_at is not None:
            assert s.end is not None and s.end <= resolved_at
    for a, b in pairwise(spans):
        assert a.end is not None and a.end <= b.start


def test_impact_counts_hours_and_cost_of_breaker_transitions_only() -> None:
    rows = [
        row("closed", "open", T0),
        AuditEntry(1, T0 + H, "system", "alert.fired", "a", {"to": "closed"}),
        row("open", "closed", T0 + 2 * H),
    ]
    impact = incident_impact(
        members=[member(cost=10.0)],
        timeline=rows,
        resolved_at=None,
        platform_hourly_cost=100.0,
        now=T0 + 5 * H,
    )
    assert impact.hours == {"a": 2.0}
    assert impact.hours_of("a") == 2.0 and impact.hours_of("b") == 0.0
    assert impact.cost.contained == 20.0
    assert impact.cost.uncontained == 200.0
    assert impact.platform_hourly_cost == 100.0
