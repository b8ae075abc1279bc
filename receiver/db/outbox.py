"""The notification outbox: queued rows, and the worker's lease, sent and failed marks."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import Notification
from receiver.domain.notification import Channel, IncidentMessage
from receiver.domain.recipients import Recipient


@dataclass(frozen=True)
class Claimed:
    """A row leased for delivery."""

    id: int
    incident_id: str
    channel: Channel
    event: str
    attempt: int
    message: IncidentMessage
    created_at: datetime | None = None
    audience: str = ""
    # E-mail rows: every recipient with its state; None for the other channels.
    recipients: tuple[Recipient, ...] | None = None
    message_key: str | None = None
    thread_key: str | None = None
    # Attempts before this one that the provider answered 429.
    throttled: int = 0


@dataclass(frozen=True)
class NewRow:
    """One row to queue: `message` on `channel` (for e-mail, to one audience)."""

    channel: Channel
    message: IncidentMessage
    audience: str = ""
    recipients: Sequence[Recipient] | None = None
    message_key: str | None = None
    thread_key: str | None = None


async def channels_told(session: AsyncSession, incident_id: str) -> set[Channel]:
    """The channels with a row about this incident, whatever became of it."""
    told = await session.scalars(
        select(Notification.channel).where(Notification.incident_id == incident_id).distinct()
    )
    return {Channel(c) for c in told}


async def email_threads(session: AsyncSession, incident_id: str) -> dict[str, str]:
    """audience -> thread key of the first e-mail about this incident to that audience."""
    rows = await session.execute(
        select(Notification.audience, Notification.thread_key)
        .where(
            Notification.incident_id == incident_id,
            Notification.channel == Channel.EMAIL.value,
            Notification.thread_key.is_not(None),
        )
        .order_by(Notification.audience, Notification.id)
        .distinct(Notification.audience)
    )
    return {audience: key for audience, key in rows if key}


async def insert_rows(
    session: AsyncSession, message: IncidentMessage, channels: Sequence[Channel]
) -> None:
    """One pending row of `message` per channel."""
    await insert_new(session, [NewRow(c, message) for c in channels])


async def insert_new(session: AsyncSession, rows: Sequence[NewRow]) -> None:
    """Pending rows, in the order given (ids follow it, and so does delivery)."""
    if not rows:
        return
    # Most e-mail rows of one event share nothing but small tenant views; the operators'
    # row and the other channels' rows share one message: serialise each message once.
    payloads: dict[int, dict[str, object]] = {}
    values: list[dict[str, Any]] = []
    for row in rows:
        payload = payloads.setdefault(id(row.message), row.message.to_json())
        values.append(
            {
                "incident_id": row.message.incident_id,
                "event": row.message.event.value,
                "channel": row.channel.value,
                "message": payload,
                "audience": row.audience,
                "recipients": None
                if row.recipients is None
                else [r.to_json() for r in row.recipients],
                "message_key": row.message_key,
                "thread_key": row.thread_key,
            }
        )
    await session.execute(insert(Notification), values)


async def lease_due(
    session: AsyncSession,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    channel: Channel | None = None,
    skip: Collection[Channel] = (),
) -> list[Claimed]:
    """Lease due rows until `now + lease`, counting an attempt on each; in id order.

    Only `channel`'s rows when given, never those of the channels in `skip`. Only the
    oldest pending row of each (incident, channel, audience) is due, so PagerDuty never
    hears "resolve" before "trigger", while the e-mails to different audiences (each
    tenant's admins) go side by side; SKIP LOCKED lets replicas claim side by side."""
    n = Notification.__table__.alias("n")
    p = Notification.__table__.alias("p")
    # The head of each (incident, channel, audience) queue, from one aggregate over the
    # pending rows, then its row by primary key: linear whatever the planner knows of the
    # table (a "no earlier pending row" anti-join took seconds over 5,000 fresh rows).
    heads = select(func.min(p.c.id).label("id")).where(p.c.status == "pending")
    if channel is not None:
        heads = heads.where(p.c.channel == channel.value)
    if skip:
        heads = heads.where(p.c.channel.not_in([c.value for c in skip]))
    head = heads.group_by(p.c.incident_id, p.c.channel, p.c.audience).subquery("heads")
    due = (
        select(n.c.id)
        .join(head, n.c.id == head.c.id)
        .where(n.c.status == "pending", n.c.next_attempt_at <= now)
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
            Notification.created_at,
            Notification.audience,
            Notification.recipients,
            Notification.message_key,
            Notification.thread_key,
            Notification.throttled,
        )
    )
    return [_claimed(r) for r in sorted(rows, key=lambda r: r.id)]


def _claimed(r: Any) -> Claimed:
    return Claimed(
        id=r.id,
        incident_id=r.incident_id,
        channel=Channel(r.channel),
        event=r.event,
        attempt=r.attempts,
        message=IncidentMessage.from_json(r.message),
        created_at=r.created_at,
        audience=r.audience,
        recipients=None
        if r.recipients is None
        else tuple(Recipient.from_json(d) for d in r.recipients),
        message_key=r.message_key,
        thread_key=r.thread_key,
        throttled=r.throttled,
    )


def _recipients_value(recipients: Sequence[Recipient] | None) -> dict[str, object]:
    return {} if recipients is None else {"recipients": [r.to_json() for r in recipients]}


async def mark_sent(
    session: AsyncSession,
    notification_id: int,
    *,
    provider_ref: str,
    now: datetime,
    recipients: Sequence[Recipient] | None = None,
) -> None:
    await session.execute(
        update(Notification)
        .where(Notification.id == notification_id)
        .values(
            status="sent",
            sent_at=now,
            provider_ref=provider_ref,
            last_error=None,
            **_recipients_value(recipients),
        )
    )


async def mark_failed(
    session: AsyncSession,
    notification_id: int,
    *,
    error: str,
    retry_at: datetime | None,
    recipients: Sequence[Recipient] | None = None,
    throttled: bool = False,
) -> None:
    """A failed attempt: due again at `retry_at`, or failed for good when it is None.
    `throttled`: the provider answered 429 (counted apart from the other failures)."""
    values: dict[str, object] = {"last_error": error, **_recipients_value(recipients)}
    if retry_at is None:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = retry_at
    if throttled:
        values["throttled"] = Notification.throttled + 1
    await session.execute(
        update(Notification).where(Notification.id == notification_id).values(**values)
    )
