"""Writing notifications into the outbox, inside the caller's transaction.

Nothing is sent here: the worker (receiver/channels/worker.py) delivers rows after
commit, so a rolled-back incident never pages anyone, and a crash after commit loses
nothing."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db import outbox as outbox_rows
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
        routed |= await outbox_rows.channels_told(session, message.incident_id)
    channels = sorted(routed)
    if enabled is not None:
        channels = [c for c in channels if c in enabled]
    if channels:
        await outbox_rows.insert_rows(session, message, channels)
    return channels
