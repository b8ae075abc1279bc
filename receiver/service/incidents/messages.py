"""What the channels are told about an incident event, queued in the outbox inside the
transaction that made the event (the worker sends it after commit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from receiver.config import ServiceConfig
from receiver.db import incidents as rows
from receiver.domain.incident import IncidentRecord
from receiver.domain.links import incident_url
from receiver.domain.members import Member
from receiver.domain.notification import IncidentMessage, NotificationEvent, TenantSummary
from receiver.domain.tiers import Priority
from receiver.service import outbox
from receiver.service.incidents.reads import find_incident


def incident_message(
    record: IncidentRecord,
    members: Sequence[Member],
    runbook_urls: Sequence[str],
    *,
    event: NotificationEvent,
    previous: Priority | None,
    actor: str | None,
    note: str | None,
    public_url: str | None,
    now: datetime,
) -> IncidentMessage:
    """The message about `event`, from the incident as it is now."""
    return IncidentMessage(
        event=event,
        incident_id=record.id,
        title=record.title,
        priority=record.priority,
        previous_priority=previous,
        status=record.status.value,
        opened_at=record.opened_at,
        ack_due_at=record.ack_due_at,
        actor=actor,
        note=note,
        tenants=tuple(
            TenantSummary(
                tenant_id=m.tenant_id,
                tier=m.tier,
                name=m.name,
                breaker_state=m.breaker_state.value,
                admin_email=m.admin_email,
            )
            for m in members
        ),
        runbook_urls=tuple(runbook_urls),
        incident_url=incident_url(public_url, record.id),
        occurred_at=now,
    )


async def build_message(
    session: AsyncSession,
    *,
    incident_id: str,
    event: NotificationEvent,
    previous: Priority | None,
    actor: str | None,
    note: str | None,
    config: ServiceConfig,
    now: datetime,
) -> IncidentMessage:
    """What the channels are told about `event`, read from the incident as it is now."""
    record = await find_incident(session, incident_id)
    members = await rows.members(session, incident_id)
    return incident_message(
        record,
        members,
        await rows.runbook_urls(session, incident_id),
        event=event,
        previous=previous,
        actor=actor,
        note=note,
        public_url=config.public_url,
        now=now,
    )


async def notify(
    session: AsyncSession,
    incident_id: str,
    event: NotificationEvent,
    *,
    config: ServiceConfig,
    now: datetime,
    previous: Priority | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> None:
    """Queue the message about `event` on the channels it routes to."""
    message = await build_message(
        session,
        incident_id=incident_id,
        event=event,
        previous=previous,
        actor=actor,
        note=note,
        config=config,
        now=now,
    )
    await outbox.enqueue(
        session, message, enabled=config.enabled_channels, operators=config.email_to
    )
