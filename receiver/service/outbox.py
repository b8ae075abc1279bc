"""Writing notifications into the outbox, inside the caller's transaction.

Nothing is sent here: the worker delivers rows after commit, so a rolled-back incident
never pages anyone, and a crash after commit loses nothing."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db.audit import SYSTEM, AuditTrail
from receiver.db.tables import Notification
from receiver.db.transaction import in_transaction
from receiver.domain.notification import (
    Channel,
    IncidentMessage,
    NotificationEvent,
    channels_for,
)


async def enqueue(
    session: AsyncSession,
    message: IncidentMessage,
    *,
    enabled: Collection[Channel] | None = None,
) -> list[Channel]:
    """Queue `message` on the channels its priority and event route to, and, for a
    follow-up (escalated, acknowledged, resolved, SLA breached), on every channel already
    told about this incident: whoever heard "opened" hears how it ends, even after the
    incident escalated to a priority that no longer routes to them (a P2 e-mailed, then
    P1, which does not e-mail). A channel never told is not added: a P2 never pages.

    `enabled` limits it to the configured channels (None: all routed channels, which the
    worker then skips if unconfigured). Returns the channels queued."""
    routed = set(channels_for(message.priority, message.event))
    if message.event is not NotificationEvent.OPENED:
        told = await session.scalars(
            select(Notification.channel)
            .where(Notification.incident_id == message.incident_id)
            .distinct()
        )
        routed |= {Channel(c) for c in told}
    channels = sorted(routed)
    if enabled is not None:
        channels = [c for c in channels if c in enabled]
    if channels:
        payload = message.to_json()
        await session.execute(
            insert(Notification),
            [
                {
                    "incident_id": message.incident_id,
                    "event": message.event.value,
                    "channel": c.value,
                    "message": payload,
                }
                for c in channels
            ],
        )
    return channels


# --- delivery (the worker's side) ---------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    incident_id: str
    channel: Channel
    event: str
    attempt: int
    message: IncidentMessage


async def claim_due(
    *,
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    lease: timedelta,
    limit: int = 20,
) -> list[Claimed]:
    """Take due rows for delivery, leasing them so no other replica takes them meanwhile.

    A lease rather than a lock held while sending: a slow provider must not hold a
    database transaction open, and if this process dies mid-send the lease runs out and
    another replica delivers the row (at least once; PagerDuty dedups on the incident id).
    Only the oldest pending row of each (incident, channel) is taken, so PagerDuty never
    hears "resolve" before "trigger"."""

    async def work(session: AsyncSession) -> list[Claimed]:
        n = Notification.__table__.alias("n")
        earlier = Notification.__table__.alias("earlier")
        due = (
            select(n.c.id)
            .where(
                n.c.status == "pending",
                n.c.next_attempt_at <= now,
                ~exists().where(
                    earlier.c.incident_id == n.c.incident_id,
                    earlier.c.channel == n.c.channel,
                    earlier.c.status == "pending",
                    earlier.c.id < n.c.id,
                ),
            )
            .order_by(n.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=n)
        )
        rows = await session.execute(
            update(Notification)
            .where(Notification.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + lease, attempts=Notification.attempts + 1)
            .returning(
                Notification.id,
                Notification.incident_id,
                Notification.channel,
                Notification.event,
                Notification.attempts,
                Notification.message,
            )
        )
        return [
            Claimed(
                id=r.id,
                incident_id=r.incident_id,
                channel=Channel(r.channel),
                event=r.event,
                attempt=r.attempts,
                message=IncidentMessage.from_json(r.message),
            )
            for r in sorted(rows, key=lambda r: r.id)
        ]

    return await in_transaction(sessions, work, what="outbox claim")


async def record_sent(
    *,
    sessions: async_sessionmaker[AsyncSession],
    claimed: Claimed,
    provider_ref: str,
    now: datetime,
) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(Notification)
            .where(Notification.id == claimed.id)
            .values(status="sent", sent_at=now, provider_ref=provider_ref[:200], last_error=None)
        )
        audit = AuditTrail()
        audit.add(
            "notification.sent",
            actor=SYSTEM,
            incident_id=claimed.incident_id,
            channel=claimed.channel.value,
            event=claimed.event,
            attempt=claimed.attempt,
            notification_id=claimed.id,
            provider_ref=provider_ref[:200],
        )
        await audit.flush(session)

    await in_transaction(sessions, work, what="outbox record")


async def record_failed(
    *,
    sessions: async_sessionmaker[AsyncSession],
    claimed: Claimed,
    error: str,
    retry_at: datetime | None,
) -> None:
    """One failed attempt: retried at `retry_at`, or given up on when it is None."""

    async def work(session: AsyncSession) -> None:
        values: dict[str, object] = {"last_error": error[:1000]}
        if retry_at is None:
            values["status"] = "failed"
        else:
            values["next_attempt_at"] = retry_at
        await session.execute(
            update(Notification).where(Notification.id == claimed.id).values(**values)
        )
        audit = AuditTrail()
        audit.add(
            "notification.failed",
            actor=SYSTEM,
            incident_id=claimed.incident_id,
            channel=claimed.channel.value,
            event=claimed.event,
            attempt=claimed.attempt,
            notification_id=claimed.id,
            error=error[:1000],
            will_retry=retry_at is not None,
            retry_at=retry_at,
        )
        await audit.flush(session)

    await in_transaction(sessions, work, what="outbox record")
