"""Reads the operator console needs beyond the API's: the breaker board's tenants, and an
incident page (the incident in full, its timeline and its postmortem document) in one
read transaction. The console's writes go through the API's use cases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db import tenants as tenant_rows
from receiver.db.transaction import in_transaction
from receiver.domain.incident_detail import IncidentDetail, postmortem_input
from receiver.domain.isolation import AuditEntry
from receiver.domain.postmortem import render_postmortem
from receiver.domain.tenant import BoardTenant
from receiver.service.incidents.reads import load_detail


@dataclass(frozen=True)
class IncidentPage:
    detail: IncidentDetail
    timeline: list[AuditEntry]
    postmortem_markdown: str


async def board_tenants(*, sessions: async_sessionmaker[AsyncSession]) -> list[BoardTenant]:
    """Every known tenant, its tier and the latest change of its breaker (the breaker
    itself comes from the replica's in-memory view)."""

    async def work(session: AsyncSession) -> list[BoardTenant]:
        return await tenant_rows.board(session)

    return await in_transaction(sessions, work, what="breaker board")


async def incident_page(
    *, sessions: async_sessionmaker[AsyncSession], incident_id: str, now: datetime
) -> IncidentPage:
    """NotFound for an unknown incident, as the API's read."""

    async def work(session: AsyncSession) -> IncidentPage:
        detail, timeline = await load_detail(session, incident_id, now=now)
        markdown = render_postmortem(postmortem_input(detail, timeline), now=now)
        return IncidentPage(detail=detail, timeline=timeline, postmortem_markdown=markdown)

    return await in_transaction(sessions, work, what="incident page")
