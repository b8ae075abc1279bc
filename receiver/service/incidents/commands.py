"""What people and the clock do to incidents: acknowledge, resolve, the SLA check. Each
is one transaction that changes the row, audits it and queues the notification."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db import incidents as rows
from receiver.db.audit import SYSTEM, AuditTrail
from receiver.db.transaction import in_transaction
from receiver.domain import incident as domain
from receiver.domain.incident import IncidentRecord, IncidentStatus
from receiver.domain.notification import NotificationEvent
from receiver.errors import Conflict
from receiver.service.incidents.messages import notify
from receiver.service.incidents.reads import find_incident, load_record


@dataclass(frozen=True)
class PersonCommand:
    """A person's move of an incident (acknowledge, resolve): the domain rule and how the
    move is recorded. Calling it runs the move in one transaction: lock the incident, move
    it (Conflict if its state forbids), audit, queue the notification; returns the
    incident as it is then."""

    verb: str
    move: Callable[[IncidentStatus], IncidentStatus]
    action: str
    event: NotificationEvent
    what: str
    details: Callable[[IncidentRecord, datetime], dict[str, Any]]

    async def __call__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        incident_id: str,
        actor: str,
        note: str | None,
        config: ServiceConfig,
        now: datetime,
    ) -> IncidentRecord:
        async def work(session: AsyncSession) -> IncidentRecord:
            found = await find_incident(session, incident_id, lock=True)
            try:
                status = self.move(found.status)
            except domain.IncidentError as exc:
                raise Conflict(f"cannot {self.verb} {incident_id}: {exc}") from exc
            await rows.set_status(session, incident_id, status=status, actor=actor, at=now)
            audit = AuditTrail()
            audit.add(
                self.action,
                actor=actor,
                incident_id=incident_id,
                priority=found.priority.value,
                note=note,
                **self.details(found, now),
            )
            await audit.flush(session)
            await notify(
                session, incident_id, self.event, config=config, now=now, actor=actor, note=note
            )
            return await load_record(session, incident_id)

        return await in_transaction(sessions, work, what=self.what)


acknowledge_incident = PersonCommand(
    verb="acknowledge",
    move=domain.acknowledge,
    action="incident.acknowledged",
    event=NotificationEvent.ACKNOWLEDGED,
    what="incident acknowledgement",
    details=lambda found, now: {
        "ack_due_at": found.ack_due_at,
        "within_sla": now <= found.ack_due_at,
    },
)
resolve_incident = PersonCommand(
    verb="resolve",
    move=domain.resolve,
    action="incident.resolved",
    event=NotificationEvent.RESOLVED,
    what="incident resolution",
    details=lambda found, now: {"automatic": False},
)


async def check_sla_breaches(
    *,
    sessions: async_sessionmaker[AsyncSession],
    config: ServiceConfig,
    now: datetime,
    batch: int = 100,
) -> list[str]:
    """Flag, audit (`sla.breached`) and notify incidents still open past ack_due_at.
    Replicas checking at once each take different incidents (SKIP LOCKED). Returns the
    incidents flagged."""

    async def work(session: AsyncSession) -> list[str]:
        overdue = await rows.lock_overdue(session, now=now, limit=batch)
        if not overdue:
            return []
        ids = [found.id for found in overdue]
        await rows.mark_sla_breached(session, ids, now=now)
        audit = AuditTrail()
        for found in overdue:
            audit.add(
                "sla.breached",
                actor=SYSTEM,
                incident_id=found.id,
                priority=found.priority.value,
                due=found.ack_due_at,
                overdue_seconds=round((now - found.ack_due_at).total_seconds(), 3),
            )
        await audit.flush(session)
        for incident_id in ids:
            await notify(
                session, incident_id, NotificationEvent.SLA_BREACHED, config=config, now=now
            )
        return ids

    return await in_transaction(sessions, work, what="SLA check")
