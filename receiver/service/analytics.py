"""Incident analytics over a period (receiver.domain.analytics): one read transaction,
aggregated in SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db import analytics as rows
from receiver.db.transaction import in_transaction
from receiver.domain.analytics import AnalyticsTrend, IncidentAnalytics, StoreCounts, summarise


async def incident_analytics(
    *,
    sessions: async_sessionmaker[AsyncSession],
    since: datetime,
    until: datetime,
    now: datetime,
) -> IncidentAnalytics:
    async def work(session: AsyncSession) -> IncidentAnalytics:
        return summarise(
            since=since,
            until=until,
            totals=await rows.totals_by_priority(session, since=since, until=until, now=now),
            by_status=await rows.counts_by_status(session, since=since, until=until),
            trips_by_tenant=await rows.trips_by_tenant(session, since=since, until=until),
        )

    return await in_transaction(sessions, work, what="incident analytics")


async def incident_trend(
    *,
    sessions: async_sessionmaker[AsyncSession],
    since: datetime,
    until: datetime,
    now: datetime,
) -> AnalyticsTrend:
    """The period's analytics (as `incident_analytics`) and its incidents day by day, in
    one read transaction: the console's analytics page."""

    async def work(session: AsyncSession) -> AnalyticsTrend:
        summary = summarise(
            since=since,
            until=until,
            totals=await rows.totals_by_priority(session, since=since, until=until, now=now),
            by_status=await rows.counts_by_status(session, since=since, until=until),
            trips_by_tenant=await rows.trips_by_tenant(session, since=since, until=until),
        )
        days = await rows.totals_by_day(session, since=since, until=until)
        return AnalyticsTrend(summary=summary, days=days)

    return await in_transaction(sessions, work, what="incident trend")


async def store_counts(*, sessions: async_sessionmaker[AsyncSession], now: datetime) -> StoreCounts:
    """Outbox backlog and unresolved incidents, for the scrape-time gauges."""

    async def work(session: AsyncSession) -> StoreCounts:
        return await rows.store_counts(session, now=now)

    return await in_transaction(sessions, work, what="store counts")
