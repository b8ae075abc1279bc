"""Analytics queries: incidents of a period summed by priority and counted by status,
breaker trips by tenant. Aggregated in SQL; receiver.domain.analytics adds them up."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import AuditLog, Incident, Notification, Postmortem
from receiver.domain.analytics import DayTotals, PriorityTotals, StoreCounts

_FORCED = ("forced_open", "forced_closed")


def _seconds(start: Any, end: Any) -> Any:
    return cast(func.extract("epoch", end - start), Float)


def _opened_in(since: datetime, until: datetime) -> Any:
    return (Incident.opened_at >= since) & (Incident.opened_at < until)


async def totals_by_priority(
    session: AsyncSession, *, since: datetime, until: datetime, now: datetime
) -> list[PriorityTotals]:
    """Incidents opened in [since, until) by priority; an SLA breach as the
    `incident_summary` view counts it, `now` standing in for a response not yet made."""
    first_response = func.coalesce(Incident.acknowledged_at, Incident.resolved_at, literal(now))
    to_ack = _seconds(Incident.opened_at, Incident.acknowledged_at)
    to_resolve = _seconds(Incident.opened_at, Incident.resolved_at)
    stmt = (
        select(
            Incident.priority,
            func.count().label("incidents"),
            func.avg(to_ack).label("mtta"),
            func.avg(to_resolve).label("mttr"),
            func.count().filter(first_response > Incident.ack_due_at).label("breaches"),
            func.count().filter(Postmortem.false_positive).label("false_positives"),
            func.sum(to_ack).label("ack_sum"),
            func.count(Incident.acknowledged_at).label("acked"),
            func.sum(to_resolve).label("res_sum"),
            func.count(Incident.resolved_at).label("resolved"),
        )
        .select_from(Incident)
        .outerjoin(Postmortem, Postmortem.incident_id == Incident.id)
        .where(_opened_in(since, until))
        .group_by(Incident.priority)
    )
    return [
        PriorityTotals(
            priority=r.priority,
            incidents=r.incidents,
            sla_breaches=r.breaches,
            false_positives=r.false_positives,
            mtta_seconds=r.mtta,
            mttr_seconds=r.mttr,
            acknowledged=r.acked,
            ack_seconds=r.ack_sum,
            resolved=r.resolved,
            resolve_seconds=r.res_sum,
        )
        for r in await session.execute(stmt)
    ]


async def counts_by_status(
    session: AsyncSession, *, since: datetime, until: datetime
) -> dict[str, int]:
    rows = await session.execute(
        select(Incident.status, func.count())
        .where(_opened_in(since, until))
        .group_by(Incident.status)
    )
    return {s: int(n) for s, n in rows.tuples()}


async def trips_by_tenant(
    session: AsyncSession, *, since: datetime, until: datetime
) -> dict[str, int]:
    """Trips in [since, until), most first: automatic moves into open (an operator's
    release is not one)."""
    rows = await session.execute(
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
    return {t: int(n) for t, n in rows.tuples() if t is not None}


async def totals_by_day(
    session: AsyncSession, *, since: datetime, until: datetime
) -> list[DayTotals]:
    """Incidents opened in [since, until) per UTC day: count, MTTA and MTTR."""
    day = func.date_trunc("day", func.timezone("UTC", Incident.opened_at))
    rows = await session.execute(
        select(
            day.label("day"),
            func.count().label("incidents"),
            func.avg(_seconds(Incident.opened_at, Incident.acknowledged_at)).label("mtta"),
            func.avg(_seconds(Incident.opened_at, Incident.resolved_at)).label("mttr"),
        )
        .where(_opened_in(since, until))
        .group_by(day)
        .order_by(day)
    )
    return [
        DayTotals(day=r.day.date(), incidents=r.incidents, mtta_seconds=r.mtta, mttr_seconds=r.mttr)
        for r in rows
    ]


async def store_counts(session: AsyncSession, *, now: datetime) -> StoreCounts:
    """Outbox rows waiting or given up on, by channel; unresolved incidents by priority."""
    outbox = await session.execute(
        select(Notification.channel, Notification.status, func.count())
        .where(Notification.status.in_(("pending", "failed")))
        .group_by(Notification.channel, Notification.status)
    )
    oldest = await session.scalar(
        select(func.min(Notification.created_at)).where(Notification.status == "pending")
    )
    unresolved = await session.execute(
        select(Incident.priority, func.count())
        .where(Incident.status != "resolved")
        .group_by(Incident.priority)
    )
    return StoreCounts(
        outbox={(c, s): int(n) for c, s, n in outbox.tuples()},
        unresolved_incidents={p: int(n) for p, n in unresolved.tuples()},
        oldest_pending_seconds=(now - oldest).total_seconds() if oldest else 0.0,
    )
