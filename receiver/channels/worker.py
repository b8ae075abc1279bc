"""Drains the notification outbox: claim due rows, send each, record the outcome.

Runs in every replica; claims are leased with SKIP LOCKED, so replicas share the work
and never send one row twice at once. A lease rather than a lock held while sending: a
slow provider must not hold a database transaction open, and if this process dies
mid-send the lease runs out and another replica delivers the row (at least once;
PagerDuty dedups on the incident id).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.channels.base import DeliveryError, Sender
from receiver.db import outbox
from receiver.db.audit import SYSTEM, AuditTrail
from receiver.db.outbox import Claimed
from receiver.db.transaction import in_transaction
from receiver.domain.backoff import retry_delay
from receiver.domain.notification import Channel
from receiver.errors import ReceiverError

log = logging.getLogger(__name__)

# Rows claimed per round (each round sends them concurrently).
CLAIM_BATCH = 20


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    # Longer than any send may take (senders time out at 10 s), so a lease only runs
    # out when the process that took it is gone.
    lease_seconds: float = 60.0


class OutboxWorker:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        senders: Mapping[Channel, Sender],
        policy: RetryPolicy,
        poll_seconds: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self._sessions = sessions
        self._senders = senders
        self._policy = policy
        self._poll = poll_seconds
        self._rng = rng or random.Random()

    async def run_forever(self) -> None:
        while True:
            try:
                busy = await self.run_once()
            except ReceiverError as exc:
                log.warning("outbox worker waiting for the database", extra={"error": exc.detail})
                busy = 0
            except Exception:
                log.exception("outbox worker round failed")
                busy = 0
            if not busy:
                await asyncio.sleep(self._poll)

    async def run_once(self) -> int:
        """Deliver what is due now; returns how many rows were attempted."""
        now = datetime.now(UTC)
        lease = timedelta(seconds=self._policy.lease_seconds)

        async def work(session: AsyncSession) -> list[Claimed]:
            return await outbox.lease_due(session, now=now, lease=lease, limit=CLAIM_BATCH)

        claimed = await in_transaction(self._sessions, work, what="outbox claim")
        if claimed:
            await asyncio.gather(*(self._deliver(c) for c in claimed))
        return len(claimed)

    async def _deliver(self, claimed: Claimed) -> None:
        sender = self._senders.get(claimed.channel)
        context = {
            "incident_id": claimed.incident_id,
            "channel": claimed.channel.value,
            "event": claimed.event,
            "attempt": claimed.attempt,
        }
        if sender is None:
            await self._record_failed(
                claimed, error=f"{claimed.channel.value} is not configured", retry_at=None
            )
            log.warning("notification dropped: channel not configured", extra=context)
            return
        try:
            ref = await sender.send(claimed.message)
        except Exception as raised:
            # A sender's bug must not leave the row leased and silent: treat it as a
            # retryable failure, so it is audited and tried again.
            exc = (
                raised
                if isinstance(raised, DeliveryError)
                else DeliveryError(claimed.channel, repr(raised), retryable=True)
            )
            retry_at = None
            if exc.retryable and claimed.attempt < self._policy.max_attempts:
                delay = retry_delay(
                    claimed.attempt,
                    base=self._policy.base_seconds,
                    cap=self._policy.max_seconds,
                    draw=self._rng.random(),
                    retry_after=exc.retry_after,
                )
                retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            await self._record_failed(claimed, error=str(exc), retry_at=retry_at)
            log.warning(
                "notification attempt failed",
                extra={**context, "error": str(exc), "will_retry": retry_at is not None},
            )
            return
        await self._record_sent(claimed, provider_ref=ref, now=datetime.now(UTC))
        log.info("notification sent", extra=context)

    async def _record_sent(self, claimed: Claimed, *, provider_ref: str, now: datetime) -> None:
        ref = provider_ref[:200]
        await self._record(
            claimed,
            "notification.sent",
            lambda session: outbox.mark_sent(session, claimed.id, provider_ref=ref, now=now),
            provider_ref=ref,
        )

    async def _record_failed(
        self, claimed: Claimed, *, error: str, retry_at: datetime | None
    ) -> None:
        """One failed attempt: retried at `retry_at`, or given up on when it is None."""
        error = error[:1000]
        await self._record(
            claimed,
            "notification.failed",
            lambda session: outbox.mark_failed(session, claimed.id, error=error, retry_at=retry_at),
            error=error,
            will_retry=retry_at is not None,
            retry_at=retry_at,
        )

    async def _record(
        self,
        claimed: Claimed,
        action: str,
        mark: Callable[[AsyncSession], Awaitable[None]],
        **details: Any,
    ) -> None:
        """Mark the row and audit the attempt, in one transaction."""

        async def work(session: AsyncSession) -> None:
            await mark(session)
            audit = AuditTrail()
            audit.add(
                action,
                actor=SYSTEM,
                incident_id=claimed.incident_id,
                channel=claimed.channel.value,
                event=claimed.event,
                attempt=claimed.attempt,
                notification_id=claimed.id,
                **details,
            )
            await audit.flush(session)

        await in_transaction(self._sessions, work, what="outbox record")
