"""What an incident cost: when each member's breaker kept its traffic out, read from the
incident's audit record, and the cost of that isolation against the outage it prevented.

The audit log is the incident's record: the breaker.transition rows tagged with the
incident's id say when each member was isolated and released."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from receiver.domain.breaker import BreakerState, counts_as_isolated
from receiver.domain.incident import CostImpact, IsolationSpan, cost_impact, isolated_hours
from receiver.domain.members import Member


@dataclass(frozen=True)
class AuditEntry:
    """One row of an incident's audit record (its timeline)."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    tenant_id: str | None
    details: dict[str, Any]


def _at(details: Mapping[str, Any], fallback: datetime) -> datetime:
    """The transition's own time (`at`, written by the replica that made it), else the
    row's."""
    value = details.get("at")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        if parsed.utcoffset() is not None:
            return parsed
    return fallback


def isolation_spans(
    members: Sequence[Member],
    transitions: Sequence[AuditEntry],
    *,
    resolved_at: datetime | None,
) -> list[IsolationSpan]:
    """When each member's breaker kept its traffic out during the incident.

    Read from the incident's breaker.transition rows: a move into open, half_open or
    forced_open starts a span, a move into closed or forced_closed ends it (half-open
    counts: the gateway admits only probes). A tenant already isolated when it joined
    (its first row starts from an isolated state) counts from joining. Spans still open
    end when the incident resolved, else at `now` (the domain's open span)."""
    spans: list[IsolationSpan] = []
    for m in members:
        rows = [r for r in transitions if r.tenant_id == m.tenant_id]
        start: datetime | None = None
        if rows and counts_as_isolated(BreakerState(rows[0].details.get("from", "closed"))):
            start = m.joined_at
        for r in rows:
            at = _at(r.details, r.occurred_at)
            isolated = counts_as_isolated(BreakerState(r.details.get("to", "closed")))
            if isolated and start is None:
                start = at
            elif not isolated and start is not None:
                spans.append(_span(m, start, at, resolved_at))
                start = None
        if start is not None:
            spans.append(_span(m, start, resolved_at, resolved_at))
    return spans


def _span(m: Member, start: datetime, end: datetime | None, cap: datetime | None) -> IsolationSpan:
    if cap is not None:
        start = min(start, cap)
        end = cap if end is None else min(end, cap)
    if end is not None:
        end = max(start, end)  # replica clocks a little apart
    return IsolationSpan(
        tenant_id=m.tenant_id, tier=m.tier, hourly_cost=m.hourly_cost, start=start, end=end
    )


@dataclass(frozen=True)
class Impact:
    spans: list[IsolationSpan]
    hours: dict[str, float]
    cost: CostImpact
    platform_hourly_cost: float

    def hours_of(self, tenant_id: str) -> float:
        return self.hours.get(tenant_id, 0.0)


def incident_impact(
    *,
    members: Sequence[Member],
    timeline: Sequence[AuditEntry],
    resolved_at: datetime | None,
    platform_hourly_cost: float,
    now: datetime,
) -> Impact:
    """Isolation spans, hours per tenant and cost, from the incident's record.
    `platform_hourly_cost` is every tenant's hourly cost summed."""
    transitions = [r for r in timeline if r.action == "breaker.transition"]
    spans = isolation_spans(members, transitions, resolved_at=resolved_at)
    return Impact(
        spans=spans,
        hours=isolated_hours(spans, now=now),
        cost=cost_impact(spans=spans, platform_hourly_cost=platform_hourly_cost, now=now),
        platform_hourly_cost=platform_hourly_cost,
    )
