"""Writing notifications into the outbox, inside the caller's transaction.

Nothing is sent here: the worker (receiver/channels/worker.py) delivers rows after
commit, so a rolled-back incident never pages anyone, and a crash after commit loses
nothing.

PagerDuty and Slack get one row per event. E-mail gets one row per audience (the
operators, and each affected tenant's admins: see receiver/domain/recipients.py), each
holding its own recipients' states, so that a retry only goes to those who have not
accepted yet and no tenant's message names another tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db import outbox as outbox_rows
from receiver.db.outbox import NewRow
from receiver.domain.notification import (
    Channel,
    IncidentMessage,
    NotificationEvent,
    channels_for,
)
from receiver.domain.recipients import email_audiences, pending_recipients


async def enqueue(
    session: AsyncSession,
    message: IncidentMessage,
    *,
    enabled: Collection[Channel] | None = None,
    operators: Sequence[str] = (),
) -> list[Channel]:
    """Queue `message` on the channels its priority and event route to, and, for a
    follow-up (escalated, acknowledged, resolved, SLA breached), on every channel already
    told about this incident: whoever heard "opened" hears how it ends, even after the
    incident escalated to a priority that no longer routes to them (a P2 e-mailed, then
    P1, which does not e-mail). A channel never told is not added: a P2 never pages.

    `enabled` limits it to the configured channels (None: all routed channels, which the
    worker then skips if unconfigured). `operators` are the e-mail addresses that hear
    everything (RECEIVER_EMAIL_TO). Returns the channels queued."""
    routed = set(channels_for(message.priority, message.event))
    if message.event is not NotificationEvent.OPENED:
        routed |= await outbox_rows.channels_told(session, message.incident_id)
    channels = sorted(routed)
    if enabled is not None:
        channels = [c for c in channels if c in enabled]
    rows = [NewRow(c, message) for c in channels if c is not Channel.EMAIL]
    if Channel.EMAIL in channels:
        rows += await _email_rows(session, message, operators)
    await outbox_rows.insert_new(session, rows)
    return channels


async def _email_rows(
    session: AsyncSession, message: IncidentMessage, operators: Sequence[str]
) -> list[NewRow]:
    """One row per audience. Each e-mail's Message-ID has a random part of its own
    (globally unique, whatever the installation or a reset of the incident counters);
    follow-ups thread under the first e-mail of their (incident, audience)."""
    threads = await outbox_rows.email_threads(session, message.incident_id)
    rows = []
    for audience in email_audiences(message, operators=operators):
        key = uuid.uuid4().hex
        rows.append(
            NewRow(
                Channel.EMAIL,
                audience.message,
                audience=audience.key,
                recipients=pending_recipients(audience.recipients),
                message_key=key,
                thread_key=threads.get(audience.key, key),
            )
        )
    return rows
