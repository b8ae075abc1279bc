"""Drains the notification outbox: claim due rows, send each, record the outcome.

Runs in every replica; claims are leased with SKIP LOCKED, so replicas share the work
and never send one row twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.channels.base import DeliveryError, Sender
from receiver.domain.backoff import retry_delay
from receiver.domain.notification import Channel
from receiver.errors import ReceiverError
from receiver.service import outbox

log = logging.getLogger(__name__)


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
        claimed = await outbox.claim_due(
            sessions=self._sessions, now=now, lease=timedelta(seconds=self._policy.lease_seconds)
        )
        if claimed:
            await asyncio.gather(*(self._deliver(c) for c in claimed))
        return len(claimed)

    async def _deliver(self, claimed: outbox.Claimed) -> None:
        sender = self._senders.get(claimed.channel)
        context = {
            "incident_id": claimed.incident_id,
            "channel": claimed.channel.value,
            "event": claimed.event,
            "attempt": claimed.attempt,
        }
        if sender is None:
            await outbox.record_failed(
                sessions=self._sessions,
                claimed=claimed,
                error=f"{claimed.channel.value} is not configured",
                retry_at=None,
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
            await outbox.record_failed(
                sessions=self._sessions, claimed=claimed, error=str(exc), retry_at=retry_at
            )
            log.warning(
                "notification attempt failed",
                extra={**context, "error": str(exc), "will_retry": retry_at is not None},
            )
            return
        await outbox.record_sent(
            sessions=self._sessions, claimed=claimed, provider_ref=ref, now=datetime.now(UTC)
        )
        log.info("notification sent", extra=context)
