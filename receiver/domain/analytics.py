"""Incident analytics over a period: MTTA, MTTR, counts by priority and status, SLA
breaches, the false-positive rate and breaker trips by tenant, from per-priority sums.

Incidents count in the period they *opened* in ([since, until)); trips count when the
breaker tripped. MTTA averages the acknowledged incidents, MTTR the resolved ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from receiver.domain.incident import IncidentStatus
from receiver.domain.tiers import Priority


@dataclass(frozen=True)
class PriorityTotals:
    """One priority's incidents of the period, summed (seconds from opening)."""

    priority: str
    incidents: int
    sla_breaches: int
    false_positives: int
    mtta_seconds: float | None
    mttr_seconds: float | None
    acknowledged: int
    ack_seconds: float | None  # sum over the acknowledged ones
    resolved: int
    resolve_seconds: float | None  # sum over the resolved ones


@dataclass(frozen=True)
class Stats:
    incidents: int
    mtta_seconds: float | None
    mttr_seconds: float | None
    sla_breaches: int
    false_positives: int


def _mean(total: float | None, count: int) -> float | None:
    return (total or 0.0) / count if count else None


def _stats(t: PriorityTotals) -> Stats:
    return Stats(
        incidents=t.incidents,
        mtta_seconds=t.mtta_seconds,
        mttr_seconds=t.mttr_seconds,
        sla_breaches=t.sla_breaches,
        false_positives=t.false_positives,
    )


_NONE = Stats(incidents=0, mtta_seconds=None, mttr_seconds=None, sla_breaches=0, false_positives=0)


@dataclass(frozen=True)
class IncidentAnalytics:
    since: datetime
    until: datetime
    total: Stats
    by_priority: dict[str, Stats]
    by_status: dict[str, int]
    trips_by_tenant: dict[str, int]

    @property
    def false_positive_rate(self) -> float | None:
        t = self.total
        return (t.false_positives / t.incidents) if t.incidents else None

    @property
    def trips(self) -> int:
        return sum(self.trips_by_tenant.values())


def summarise(
    *,
    since: datetime,
    until: datetime,
    totals: Sequence[PriorityTotals],
    by_status: Mapping[str, int],
    trips_by_tenant: Mapping[str, int],
) -> IncidentAnalytics:
    """Every priority and status appears, at zero when the period had none."""
    by_priority = {p.value: _NONE for p in Priority}
    by_priority.update({t.priority: _stats(t) for t in totals})
    acked = sum(t.acknowledged for t in totals)
    resolved = sum(t.resolved for t in totals)
    total = Stats(
        incidents=sum(s.incidents for s in by_priority.values()),
        mtta_seconds=_mean(sum(t.ack_seconds or 0.0 for t in totals), acked),
        mttr_seconds=_mean(sum(t.resolve_seconds or 0.0 for t in totals), resolved),
        sla_breaches=sum(s.sla_breaches for s in by_priority.values()),
        false_positives=sum(s.false_positives for s in by_priority.values()),
    )
    statuses = {s.value: 0 for s in IncidentStatus}
    statuses.update(by_status)
    return IncidentAnalytics(
        since=since,
        until=until,
        total=total,
        by_priority=by_priority,
        by_status=statuses,
        trips_by_tenant=dict(trips_by_tenant),
    )


@dataclass(frozen=True)
class DayTotals:
    """Incidents opened on one UTC day, with their mean times to acknowledge and resolve."""

    day: date
    incidents: int
    mtta_seconds: float | None
    mttr_seconds: float | None


@dataclass(frozen=True)
class AnalyticsTrend:
    """The period's analytics and the same incidents day by day (days without any are
    absent)."""

    summary: IncidentAnalytics
    days: list[DayTotals]


@dataclass(frozen=True)
class StoreCounts:
    """What the scrape-time gauges show of the shared store: outbox rows by (channel,
    status), unresolved incidents by priority, the age of the oldest pending row."""

    outbox: dict[tuple[str, str], int]
    unresolved_incidents: dict[str, int]
    oldest_pending_seconds: float
