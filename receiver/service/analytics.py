"""Incident analytics over a period: MTTA, MTTR, counts by priority, SLA breaches, the
false-positive rate and breaker trips by tenant. One read transaction, aggregated in SQL.

Incidents count in the period they *opened* in ([since, until)); trips count when the
breaker tripped. MTTA averages the acknowledged incidents, MTTR the resolved ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db.tables import AuditLog, Incident, Postmortem
from receiver.db.transaction import in_transaction
from receiver.domain.tiers import Priority

_FORCED = ("forced_open", "forced_closed")


@dataclass(frozen=True)
class Stats:
    incidents: int
    mtta_seconds: float | None
    mttr_seconds: float | None
    sla_breaches: int
    false_positives: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class IncidentAnalytics:
    since: datetime
    until: datetime
    total: Stats
    by_priority: dict[str, Stats]
    by_status: dict[str, int]
    trips_by_tenant: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        t = self.total
        return {
            "since": self.since,
            "until": self.until,
            "incidents": t.incidents,
            "mtta_seconds": t.mtta_seconds,
            "mttr_seconds": t.mttr_seconds,
            "counts_by_priority": {p: s.incidents for p, s in self.by_priority.items()},
            "counts_by_status": self.by_status,
            "sla_breaches": t.sla_breaches,
            "false_positives": t.false_positives,
            "false_positive_rate": (t.false_positives / t.incidents) if t.incidents else None,
            "by_priority": {p: s.to_json() for p, s in self.by_priority.items()},
            "breaker_trips_by_tenant": self.trips_by_tenant,
            "breaker_trips": sum(self.trips_by_tenant.values()),
        }


def _seconds(start: Any, end: Any) -> Any:
    return cast(func.extract("epoch", end - start), Float)


async def incident_analytics(
    *,
    sessions: async_sessionmaker[AsyncSession],
    since: datetime,
    until: datetime,
    now: datetime,
) -> IncidentAnalytics:
    async def work(session: AsyncSession) -> IncidentAnalytics:
        breached = func.coalesce(Incident.acknowledged_at, Incident.resolved_at, literal(now))
        stmt = (
            select(
                Incident.priority,
                func.count().label("incidents"),
                func.avg(_seconds(Incident.opened_at, Incident.acknowledged_at)).label("mtta"),
                func.avg(_seconds(Incident.opened_at, Incident.resolved_at)).label("mttr"),
                func.count().filter(breached > Incident.ack_due_at).label("breaches"),
                func.count().filter(Postmortem.false_positive).label("false_positives"),
                func.sum(_seconds(Incident.opened_at, Incident.acknowledged_at)).label("ack_sum"),
                func.count(Incident.acknowledged_at).label("acked"),
                func.sum(_seconds(Incident.opened_at, Incident.resolved_at)).label("res_sum"),
                func.count(Incident.resolved_at).label("resolved"),
            )
            .select_from(Incident)
            .outerjoin(Postmortem, Postmortem.incident_id == Incident.id)
            .where(Incident.opened_at >= since, Incident.opened_at < until)
            .group_by(Incident.priority)
        )
        rows = (await session.execute(stmt)).all()
        by_priority = {
            p.value: Stats(
                incidents=0, mtta_seconds=None, mttr_seconds=None, sla_breaches=0, false_positives=0
            )
            for p in Priority
        }
        ack_sum = res_sum = 0.0
        acked = resolved = 0
        for r in rows:
            by_priority[r.priority] = Stats(
                incidents=r.incidents,
                mtta_seconds=r.mtta,
                mttr_seconds=r.mttr,
                sla_breaches=r.breaches,
                false_positives=r.false_positives,
            )
            ack_sum += r.ack_sum or 0.0
            res_sum += r.res_sum or 0.0
            acked += r.acked
            resolved += r.resolved
        total = Stats(
            incidents=sum(s.incidents for s in by_priority.values()),
            mtta_seconds=ack_sum / acked if acked else None,
            mttr_seconds=res_sum / resolved if resolved else None,
            sla_breaches=sum(s.sla_breaches for s in by_priority.values()),
            false_positives=sum(s.false_positives for s in by_priority.values()),
        )

        statuses = await session.execute(
            select(Incident.status, func.count())
            .where(Incident.opened_at >= since, Incident.opened_at < until)
            .group_by(Incident.status)
        )
        by_status = {"open": 0, "acknowledged": 0, "resolved": 0}
        by_status.update({s: int(n) for s, n in statuses.tuples()})

        # A trip: an automatic move into open (an operator's release is not one).
        trips = await session.execute(
            select(AuditLog.tenant_id, func.count())
            .where(
                AuditLog.action == "breaker.transition",
                AuditLog.occurred_at >= since,
                AuditLog.occurred_at < until,
                AuditLog.details["to"].astext == "open",
                or_(
                    AuditLog.details["from"].astext.is_(None),
                    AuditLog.details["from"].astext.not_in(_FORCED),
                ),
            )
            .group_by(AuditLog.tenant_id)
            .order_by(func.count().desc(), AuditLog.tenant_id)
        )
        return IncidentAnalytics(
            since=since,
            until=until,
            total=total,
            by_priority=by_priority,
            by_status=by_status,
            trips_by_tenant={t: int(n) for t, n in trips.tuples() if t is not None},
        )

    return await in_transaction(sessions, work, what="incident analytics")


__all__ = ["IncidentAnalytics", "Stats", "incident_analytics"]
