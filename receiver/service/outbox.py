"""Writing notifications into the outbox, inside the caller's transaction.

Nothing is sent here: the worker delivers rows after commit, so a rolled-back incident
never pages anyone, and a crash after commit loses nothing."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import Notification
from receiver.domain.notification import Channel, IncidentMessage, channels_for


async def enqueue(
    session: AsyncSession,
    message: IncidentMessage,
    *,
    enabled: Collection[Channel] | None = None,
) -> list[Channel]:
    """Queue `message` on the channels its priority and event route to.

    `enabled` limits it to the configured channels (None: all routed channels, which the
    worker then skips if unconfigured). Returns the channels queued."""
    channels = sorted(channels_for(message.priority, message.event))
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
