"""The notification outbox: queued rows, and the worker's lease, sent and failed marks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import Notification
from receiver.domain.notification import Channel, IncidentMessage


@dataclass(frozen=True)
class Claimed:
    """A row leased for delivery."""

    id: int
    incident_id: str
    channel: Channel
    event: str
    attempt: int
    message: IncidentMessage


async def channels_told(session: AsyncSession, incident_id: str) -> set[Channel]:
    """The channels with a row about this incident, whatever became of it."""
    told = await session.scalars(
        select(Notification.channel).where(Notification.incident_id == incident_id).distinct()
    )
    return {Channel(c) for c in told}


async def insert_rows(
    session: AsyncSession, message: IncidentMessage, channels: Sequence[Channel]
) -> None:
    """One pending row of `message` per channel."""
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


async def lease_due(
    session: AsyncSession, *, now: datetime, lease: timedelta, limit: int
) -> list[Claimed]:
    """Lease due rows until `now + lease`, counting an attempt on each; in id order.

    Only the oldest pending row of each (incident, channel) is due, so PagerDuty never
    hears "resolve" before "trigger"; SKIP LOCKED lets replicas claim side by side."""
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


async def mark_sent(
    session: AsyncSession, notification_id: int, *, provider_ref: str, now: datetime
) -> None:
    await session.execute(
        update(Notification)
        .where(Notification.id == notification_id)
        .values(status="sent", sent_at=now, provider_ref=provider_ref, last_error=None)
    )


async def mark_failed(
    session: AsyncSession, notification_id: int, *, error: str, retry_at: datetime | None
) -> None:
    """A failed attempt: due again at `retry_at`, or failed for good when it is None."""
    values: dict[str, object] = {"last_error": error}
    if retry_at is None:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = retry_at
    await session.execute(
        update(Notification).where(Notification.id == notification_id).values(**values)
    )
