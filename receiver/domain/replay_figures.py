"""What a what-if replay counts in its window: trips, suppressions, isolated seconds,
incidents and their priorities, per tenant (DESIGN.md "What-if replay").

Pure. The `Tally` follows the breaker events of a run from its very first input (a
tenant isolated when the window opens is counted from `since`) and counts only what falls
inside [since, until].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from receiver.domain.breaker import BreakerState, Event, Suppressed, Transition, counts_as_isolated
from receiver.domain.tiers import Priority

Span = tuple[datetime, datetime]


@dataclass
class TenantFigures:
    trips: int = 0
    suppressed: int = 0
    isolated_seconds: float = 0.0
    incidents: int = 0
    # When the tenant was isolated (open, half_open, forced_open) inside the window.
    spans: list[Span] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "trips": self.trips,
            "suppressed": self.suppressed,
            "isolated_seconds": round(self.isolated_seconds, 3),
            "incidents": self.incidents,
            "spans": [[s.isoformat(), e.isoformat()] for s, e in self.spans],
        }


@dataclass
class Figures:
    """One run's figures over the window."""

    trips: int = 0
    suppressed: int = 0
    isolated_seconds: float = 0.0
    incidents: int = 0
    by_priority: dict[str, int] = field(default_factory=lambda: {p.value: 0 for p in Priority})
    per_tenant: dict[str, TenantFigures] = field(default_factory=dict)

    def tenant(self, tenant_id: str) -> TenantFigures:
        return self.per_tenant.setdefault(tenant_id, TenantFigures())

    def as_json(self) -> dict[str, Any]:
        return {
            "trips": self.trips,
            "suppressed": self.suppressed,
            "isolated_seconds": round(self.isolated_seconds, 3),
            "incidents": self.incidents,
            "by_priority": dict(self.by_priority),
            "per_tenant": {t: f.as_json() for t, f in sorted(self.per_tenant.items())},
        }


@dataclass(frozen=True)
class IncidentOutcome:
    """An incident of a run: when it opened, its final priority, its tenants."""

    opened_at: datetime
    priority: Priority
    tenants: tuple[str, ...]


class Tally:
    """Counts a run's breaker events inside [since, until]."""

    def __init__(self, since: datetime, until: datetime) -> None:
        if until < since:
            raise ValueError(f"until ({until}) is before since ({since})")
        self.since = since
        self.until = until
        self.figures = Figures()
        self._isolated_from: dict[str, datetime] = {}

    def _inside(self, at: datetime) -> bool:
        return self.since <= at <= self.until

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, Suppressed):
                if self._inside(event.at):
                    self.figures.suppressed += 1
                    self.figures.tenant(event.tenant_id).suppressed += 1
            elif isinstance(event, Transition):
                self._transition(event)

    def _transition(self, t: Transition) -> None:
        if t.to_state is BreakerState.OPEN and self._inside(t.at):
            # Every move into open, a release into open included: the recorded
            # transitions to open that the contract compares with.
            self.figures.trips += 1
            self.figures.tenant(t.tenant_id).trips += 1
        isolated = counts_as_isolated(t.to_state)
        started = self._isolated_from.get(t.tenant_id)
        if isolated and started is None:
            self._isolated_from[t.tenant_id] = t.at
        elif not isolated and started is not None:
            del self._isolated_from[t.tenant_id]
            self._span(t.tenant_id, started, t.at)

    def _span(self, tenant_id: str, start: datetime, end: datetime) -> None:
        start, end = max(start, self.since), min(end, self.until)
        if end <= start:
            return
        seconds = (end - start).total_seconds()
        f = self.figures.tenant(tenant_id)
        f.spans.append((start, end))
        f.isolated_seconds += seconds
        self.figures.isolated_seconds += seconds

    def finish(self, incidents: Iterable[IncidentOutcome]) -> Figures:
        """Close the spans still open at `until`, count the window's incidents."""
        for tenant_id, started in sorted(self._isolated_from.items()):
            self._span(tenant_id, started, self.until)
        self._isolated_from.clear()
        for inc in incidents:
            if not self._inside(inc.opened_at):
                continue
            self.figures.incidents += 1
            self.figures.by_priority[inc.priority.value] += 1
            for tenant_id in inc.tenants:
                self.figures.tenant(tenant_id).incidents += 1
        return self.figures


def delta(baseline: Mapping[str, Any], proposed: Mapping[str, Any]) -> dict[str, float]:
    """proposed - baseline of the numeric figures (by_priority flattened as P0, P1, P2)."""
    out: dict[str, float] = {}
    for key in ("trips", "suppressed", "isolated_seconds", "incidents"):
        out[key] = proposed[key] - baseline[key]
    for p in Priority:
        out[p.value] = proposed["by_priority"][p.value] - baseline["by_priority"][p.value]
    return out
