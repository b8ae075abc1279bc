"""Incident reads for the API: the list, one incident in full, its timeline. Each public
function is one read transaction; the HTTP layer shapes the answer."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db import incidents as rows
from receiver.db import postmortems as postmortem_rows
from receiver.db import tenants as tenant_rows
from receiver.db.transaction import in_transaction
from receiver.domain.incident import IncidentRecord, IncidentStatus, parse_incident_id
from receiver.domain.incident_detail import IncidentDetail
from receiver.domain.isolation import AuditEntry, incident_impact
from receiver.domain.tiers import Priority
from receiver.errors import NotFound


async def find_incident(
    session: AsyncSession, incident_id: str, *, lock: bool = False
) -> IncidentRecord:
    """The incident (without its tenants), or NotFound for an unknown or malformed id.
    With `lock`, its row is locked for a change."""
    if parse_incident_id(incident_id) is None:
        raise NotFound(f"no incident {incident_id[:40]!r}: identifiers look like INC-YYYYMMDD-NNNN")
    record = await rows.get(session, incident_id, lock=lock)
    if record is None:
        raise NotFound(f"no incident {incident_id!r}")
    return record


async def load_record(session: AsyncSession, incident_id: str) -> IncidentRecord:
    """The incident with its tenants (NotFound as find_incident)."""
    record = await find_incident(session, incident_id)
    tenants = await rows.tenant_lists(session, [incident_id])
    return record.with_tenants(tenants.get(incident_id, []))


async def load_detail(
    session: AsyncSession, incident_id: str, *, now: datetime
) -> tuple[IncidentDetail, list[AuditEntry]]:
    """The incident in full, and its audit record (oldest first)."""
    found = await find_incident(session, incident_id)
    members = await rows.members(session, incident_id)
    timeline = await rows.timeline(session, incident_id)
    impact = incident_impact(
        members=members,
        timeline=timeline,
        resolved_at=found.resolved_at,
        platform_hourly_cost=await tenant_rows.platform_hourly_cost(session),
        now=now,
    )
    detail = IncidentDetail(
        record=found.with_tenants(m.tenant_id for m in members),
        members=members,
        alerts=await rows.linked_alerts(session, incident_id),
        runbook_urls=await rows.runbook_urls(session, incident_id),
        impact=impact,
        postmortem=await postmortem_rows.stored(session, incident_id),
        now=now,
    )
    return detail, timeline


async def list_incidents(
    *,
    sessions: async_sessionmaker[AsyncSession],
    status: IncidentStatus | None = None,
    priority: Priority | None = None,
    tenant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[IncidentRecord]:
    """Newest first; `since`/`until` bound opened_at ([since, until))."""

    async def work(session: AsyncSession) -> list[IncidentRecord]:
        return await rows.search(
            session,
            status=status,
            priority=priority,
            tenant_id=tenant_id,
            since=since,
            until=until,
            limit=limit,
        )

    return await in_transaction(sessions, work, what="incident list")


async def get_incident(
    *, sessions: async_sessionmaker[AsyncSession], incident_id: str, now: datetime
) -> IncidentDetail:
    async def work(session: AsyncSession) -> IncidentDetail:
        detail, _ = await load_detail(session, incident_id, now=now)
        return detail

    return await in_transaction(sessions, work, what="incident read")


async def incident_timeline(
    *, sessions: async_sessionmaker[AsyncSession], incident_id: str
) -> list[AuditEntry]:
    """The incident's audit rows, oldest first."""

    async def work(session: AsyncSession) -> list[AuditEntry]:
        await find_incident(session, incident_id)
        return await rows.timeline(session, incident_id)

    return await in_transaction(sessions, work, what="incident timeline")
