"""The dead man's switch (DESIGN.md "The truth from Alertmanager", heartbeat).

- `on_heartbeat`, inside the webhook's transaction: a heartbeat arrived; if the pipeline
  had been reported silent, `heartbeat.restored` and the incident resolved (actor system).
- `check`, every few seconds on every replica (the row is taken SKIP LOCKED, so one at a
  time): silent for the timeout -> `heartbeat.lost` and a P0 incident with no tenant.

The incident is opened here, not by the incident flow: it has no tenant and no alert, it
never gathers failing tenants (db.incidents leaves it out of correlation), and only a
heartbeat (or a person) resolves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db import heartbeat as rows
from receiver.db import incidents as incident_rows
from receiver.db.audit import SYSTEM, AuditTrail
from receiver.db.transaction import in_transaction
from receiver.domain import heartbeat as domain
from receiver.domain import incident as incident_domain
from receiver.domain import priority as priorities
from receiver.domain.alerts import AlertInstance
from receiver.domain.heartbeat import HeartbeatState
from receiver.domain.incident import IncidentStatus
from receiver.domain.notification import NotificationEvent
from receiver.domain.tiers import Priority
from receiver.service.incidents import messages

RESTORED_NOTE = "heartbeats arrive again: the alerting pipeline works"


def is_heartbeat_delivery(instances: Sequence[AlertInstance], *, config: ServiceConfig) -> bool:
    return config.heartbeat_timeout is not None and domain.any_heartbeat(
        instances, alertname=config.heartbeat_alertname
    )


async def started(*, sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    """A receiver started: the first start on this database is remembered."""

    async def work(session: AsyncSession) -> None:
        await rows.ensure_started(session, now=now)

    await in_transaction(sessions, work, what="heartbeat start")


async def state(session: AsyncSession) -> HeartbeatState | None:
    return await rows.read(session)


async def on_heartbeat(
    session: AsyncSession, *, config: ServiceConfig, now: datetime, audit: AuditTrail
) -> None:
    """A heartbeat arrived (in the webhook's transaction)."""
    timeout = config.heartbeat_timeout
    before = await rows.lock(session, now=now, skip_locked=False)
    await rows.record_beat(session, at=now)
    if before is None or before.lost_at is None or timeout is None:
        return
    audit.add(
        domain.RESTORED_ACTION,
        actor=SYSTEM,
        incident_id=before.incident_id,
        **domain.restored_details(
            before, timeout=timeout, alertname=config.heartbeat_alertname, now=now
        ),
    )
    if before.incident_id is None:
        return
    for found in await incident_rows.lock_unresolved(session, [before.incident_id]):
        await incident_rows.set_status(
            session, found.id, status=IncidentStatus.RESOLVED, actor=SYSTEM, at=now
        )
        audit.add(
            "incident.resolved",
            actor=SYSTEM,
            incident_id=found.id,
            priority=found.priority.value,
            note=RESTORED_NOTE,
            automatic=True,
        )
        await messages.notify(
            session,
            found.id,
            NotificationEvent.RESOLVED,
            config=config,
            now=now,
            actor=SYSTEM,
            note=RESTORED_NOTE,
        )


@dataclass(frozen=True)
class Checked:
    state: HeartbeatState | None  # None: another replica was checking
    opened: str | None = None  # the incident opened by this check


async def check(
    *, sessions: async_sessionmaker[AsyncSession], config: ServiceConfig, now: datetime
) -> Checked:
    """Report a silent pipeline once (the incident opened, if any) and return the state."""
    timeout = config.heartbeat_timeout
    if timeout is None:
        return Checked(state=None)

    async def work(session: AsyncSession) -> Checked:
        current = await rows.lock(session, now=now, skip_locked=True)
        if current is None or not domain.is_lost(current, now=now, timeout=timeout):
            return Checked(state=current)
        audit = AuditTrail()
        incident_id = await _open_incident(
            session, config=config, silence=timeout, now=now, audit=audit
        )
        audit.add(
            domain.LOST_ACTION,
            actor=SYSTEM,
            incident_id=incident_id,
            **domain.lost_details(current, timeout=timeout, alertname=config.heartbeat_alertname),
        )
        await rows.set_lost(session, at=now, incident_id=incident_id)
        await audit.flush(session)
        await messages.notify(
            session, incident_id, NotificationEvent.OPENED, config=config, now=now
        )
        return Checked(
            state=replace(current, lost_at=now, incident_id=incident_id), opened=incident_id
        )

    return await in_transaction(sessions, work, what="heartbeat check")


async def _open_incident(
    session: AsyncSession,
    *,
    config: ServiceConfig,
    silence: timedelta,
    now: datetime,
    audit: AuditTrail,
) -> str:
    day = now.astimezone(UTC).date()
    incident_id = incident_domain.format_incident_id(
        day, await incident_rows.next_seq(session, day)
    )
    title = domain.incident_title(config.heartbeat_alertname, silence)
    due = priorities.ack_due_at(opened_at=now, tiers=[], priority=Priority.P0)
    await incident_rows.insert_incident(
        session,
        incident_id=incident_id,
        title=title,
        priority=Priority.P0,
        opened_at=now,
        ack_due_at=due,
    )
    audit.add(
        "incident.opened",
        actor=SYSTEM,
        incident_id=incident_id,
        priority=Priority.P0.value,
        title=title,
        tenants=[],
        platform_alerts=[],
        ack_due_at=due,
        reason=f"no {config.heartbeat_alertname} heartbeat: the alerting pipeline is silent",
    )
    return incident_id
