"""Incident analytics over a period (receiver.domain.analytics): one read transaction,
aggregated in SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db import analytics as rows
from receiver.db.transaction import in_transaction
from receiver.domain.analytics import IncidentAnalytics, summarise


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
