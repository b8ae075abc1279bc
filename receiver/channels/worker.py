"""Drains the notification outbox: claim due rows, send each, record the outcome.

Runs in every replica; claims are leased with SKIP LOCKED, so replicas share the work
and never send one row twice at once. A lease rather than a lock held while sending: a
slow provider must not hold a database transaction open, and if this process dies
mid-send the lease runs out and another replica delivers the row (at least once;
PagerDuty dedups on the incident id).

Each configured channel has a loop of its own, paced to its provider's rate (`Pacer`),
so thousands of tenant e-mails never hold back a page. Retries back off exponentially
with jitter and give up by time: a row is failed once a retry would fall after its
channel's give-up time (counted from when it was queued), or after
RECEIVER_NOTIFY_MAX_ATTEMPTS counted attempts when that is set; a 429 (throttled)
pauses the channel for its Retry-After and is not counted. A configuration error
(certificate, credentials) is not retried and shows in /readyz (`ChannelHealth`).

E-mail rows carry their recipients' states: an attempt goes to the pending ones only,
and the row is `sent` once every recipient accepted, `failed` (naming who was not) once
none is pending or the row gives up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.channels.base import DeliveryError, RecipientSender, Sender
from receiver.channels.health import ChannelHealth
from receiver.channels.pacing import Pacer
from receiver.db import outbox
from receiver.db.audit import SYSTEM, AuditTrail
from receiver.db.outbox import Claimed
from receiver.db.transaction import in_transaction
from receiver.domain.backoff import retry_delay
from receiver.domain.notification import Channel
from receiver.domain.recipients import (
    ACCEPTED,
    NAMED_MAX,
    PENDING,
    REFUSED,
    TENANT_PREFIX,
    Recipient,
    all_accepted,
    describe_unaccepted,
    merge,
    with_state,
)
from receiver.errors import ReceiverError

log = logging.getLogger(__name__)

# Rows claimed per round and channel at most (each round sends them concurrently; the
# pacer usually allows fewer).
CLAIM_BATCH = 50

#: How long each channel keeps trying a notification, from when it was queued.
DEFAULT_GIVE_UP_SECONDS: Mapping[Channel, float] = {
    Channel.PAGERDUTY: 3600.0,
    Channel.SLACK: 3600.0,
    Channel.EMAIL: 4 * 3600.0,
}


@dataclass(frozen=True)
class RetryPolicy:
    # Counted attempts (429s excluded) before giving up; None: by time only.
    max_attempts: int | None = None
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    # Longer than any send may take (senders time out at 10 s), so a lease only runs
    # out when the process that took it is gone.
    lease_seconds: float = 60.0
    give_up_seconds: Mapping[Channel, float] = field(
        default_factory=lambda: dict(DEFAULT_GIVE_UP_SECONDS)
    )

    def deadline(self, claimed: Claimed) -> datetime | None:
        if claimed.created_at is None:
            return None
        seconds = self.give_up_seconds.get(claimed.channel, DEFAULT_GIVE_UP_SECONDS[Channel.EMAIL])
        return claimed.created_at + timedelta(seconds=seconds)


@dataclass(frozen=True)
class _Retry:
    at: datetime | None  # None: give up
    why: str = ""  # why it gives up, when it does


class OutboxWorker:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        senders: Mapping[Channel, Sender],
        policy: RetryPolicy,
        poll_seconds: float = 0.5,
        rng: random.Random | None = None,
        pacer: Pacer | None = None,
        health: ChannelHealth | None = None,
    ) -> None:
        self._sessions = sessions
        self._senders = senders
        self._policy = policy
        self._poll = poll_seconds
        self._rng = rng or random.Random()
        self._pacer = pacer or Pacer({})
        self.health = health or ChannelHealth()

    async def run_forever(self) -> None:
        """One loop per configured channel, and one failing the rows of the others."""
        loops = [self._loop(c.value, functools.partial(self._round, c), c) for c in self._senders]
        loops.append(self._loop("unconfigured", self._stray_round, None))
        await asyncio.gather(*loops)

    async def _loop(
        self, name: str, step: Callable[[], Awaitable[int]], channel: Channel | None
    ) -> None:
        while True:
            try:
                busy = await step()
            except ReceiverError as exc:
                log.warning(
                    "outbox worker waiting for the database",
                    extra={"error": exc.detail, "loop": name},
                )
                busy = 0
            except Exception:
                log.exception("outbox worker round failed", extra={"loop": name})
                busy = 0
            if not busy:
                wait = self._poll if channel is None else self._pacer.wait(channel)
                await asyncio.sleep(max(self._poll, min(wait, 5 * self._poll)))

    async def run_once(self) -> int:
        """One round on every channel; returns how many rows were attempted."""
        done = [await self._round(c) for c in self._senders]
        return sum(done) + await self._stray_round()

    async def _claim(
        self, limit: int, *, channel: Channel | None, skip: Sequence[Channel] = ()
    ) -> list[Claimed]:
        now = datetime.now(UTC)
        lease = timedelta(seconds=self._policy.lease_seconds)

        async def work(session: AsyncSession) -> list[Claimed]:
            return await outbox.lease_due(
                session, now=now, lease=lease, limit=limit, channel=channel, skip=skip
            )

        return await in_transaction(self._sessions, work, what="outbox claim")

    async def _round(self, channel: Channel) -> int:
        allowed = self._pacer.available(channel, CLAIM_BATCH)
        if not allowed:
            return 0
        claimed = await self._claim(allowed, channel=channel)
        self._pacer.take(channel, len(claimed))
        if claimed:
            await self._write(await asyncio.gather(*(self._deliver(c) for c in claimed)))
        return len(claimed)

    async def _stray_round(self) -> int:
        """Rows of channels without settings have nowhere to go: failed at once."""
        claimed = await self._claim(CLAIM_BATCH, channel=None, skip=list(self._senders))
        outcomes = []
        for c in claimed:
            error = f"{c.channel.value} is not configured"
            outcomes.append(self._record_failed(c, error=error, retry=_Retry(None)))
            log.warning("notification dropped: channel not configured", extra=_context(c))
        await self._write(outcomes)
        return len(claimed)

    async def _deliver(self, claimed: Claimed) -> _Outcome:
        sender = self._senders[claimed.channel]
        if claimed.recipients is not None and isinstance(sender, RecipientSender):
            return await self._deliver_to_recipients(claimed, sender)
        try:
            ref = await sender.send(claimed.message)
        except Exception as raised:
            return self._failed(claimed, _as_delivery_error(claimed, raised))
        return self._record_sent(claimed, provider_ref=ref)

    async def _deliver_to_recipients(self, claimed: Claimed, sender: RecipientSender) -> _Outcome:
        current = claimed.recipients or ()
        pending = [r.address for r in with_state(current, PENDING)]
        if not pending:  # nothing left to do (a row written by hand, say)
            return self._settle(claimed, current, reference="", error=None)
        try:
            attempt = await sender.send_to(
                claimed.message,
                pending,
                message_key=claimed.message_key or f"{claimed.id}",
                thread_key=claimed.thread_key,
            )
        except Exception as raised:
            return self._failed(claimed, _as_delivery_error(claimed, raised), recipients=current)
        merged = merge(current, attempt.outcomes)
        return self._settle(claimed, merged, reference=attempt.reference, error=attempt.error)

    def _settle(
        self,
        claimed: Claimed,
        recipients: Sequence[Recipient],
        *,
        reference: str,
        error: DeliveryError | None,
    ) -> _Outcome:
        """Sent when all accepted; failed when none is pending; else retried."""
        if all_accepted(recipients):
            return self._record_sent(
                claimed, provider_ref=reference or "250", recipients=recipients
            )
        summary = describe_unaccepted(recipients)
        if not with_state(recipients, PENDING):
            exc = DeliveryError(
                claimed.channel, "not delivered to every recipient", retryable=False
            )
            return self._failed(claimed, exc, recipients=recipients, summary=summary)
        exc = error or DeliveryError(
            claimed.channel, "some recipients not accepted yet", retryable=True
        )
        return self._failed(claimed, exc, recipients=recipients, summary=summary)

    def _failed(
        self,
        claimed: Claimed,
        exc: DeliveryError,
        *,
        recipients: Sequence[Recipient] | None = None,
        summary: str | None = None,
    ) -> _Outcome:
        now = datetime.now(UTC)
        throttled = exc.status == 429
        retry = self._retry(claimed, exc, now=now, throttled=throttled)
        error = str(exc) if summary is None else f"{exc}; {summary}"
        if retry.why:
            error += f"; gave up: {retry.why}"
        if exc.config_error:
            self.health.configuration_error(claimed.channel, str(exc), now=now)
            log.error("notification channel misconfigured: %s", exc, extra={**_context(claimed)})
        log.warning(
            "notification attempt failed",
            extra={**_context(claimed), "error": error, "will_retry": retry.at is not None},
        )
        return self._record_failed(
            claimed,
            error=error,
            retry=retry,
            recipients=recipients,
            throttled=throttled,
            configuration_error=exc.config_error,
        )

    def _retry(
        self, claimed: Claimed, exc: DeliveryError, *, now: datetime, throttled: bool
    ) -> _Retry:
        """When to try again, or why not."""
        if not exc.retryable:
            return _Retry(None, "configuration error" if exc.config_error else "")
        policy = self._policy
        counted = claimed.attempt - claimed.throttled - (1 if throttled else 0)
        if not throttled and policy.max_attempts and counted >= policy.max_attempts:
            return _Retry(None, f"{counted} attempts (RECEIVER_NOTIFY_MAX_ATTEMPTS)")
        delay = retry_delay(
            max(1, claimed.throttled + 1 if throttled else counted),
            base=policy.base_seconds,
            cap=policy.max_seconds,
            draw=self._rng.random(),
            retry_after=exc.retry_after,
        )
        if throttled:
            delay = max(delay, exc.retry_after or 0.0)  # honoured in full, never capped
            self._pacer.pause(claimed.channel, delay)
        at = now + timedelta(seconds=delay)
        deadline = policy.deadline(claimed)
        if deadline is not None and at > deadline:
            if now >= deadline or (throttled and exc.retry_after):
                name = f"RECEIVER_{claimed.channel.value.upper()}_GIVE_UP_SECONDS"
                return _Retry(None, f"out of time ({name})")
            at = deadline  # one last try at the deadline
        return _Retry(at)

    def _record_sent(
        self,
        claimed: Claimed,
        *,
        provider_ref: str,
        recipients: Sequence[Recipient] | None = None,
    ) -> _Outcome:
        ref = provider_ref[:200]
        now = datetime.now(UTC)
        self.health.delivered(claimed.channel)
        log.info("notification sent", extra=_context(claimed))
        return _Outcome(
            claimed,
            "notification.sent",
            lambda session: outbox.mark_sent(
                session, claimed.id, provider_ref=ref, now=now, recipients=recipients
            ),
            {"provider_ref": ref, **_recipient_details(claimed, recipients)},
        )

    def _record_failed(
        self,
        claimed: Claimed,
        *,
        error: str,
        retry: _Retry,
        recipients: Sequence[Recipient] | None = None,
        throttled: bool = False,
        configuration_error: bool = False,
    ) -> _Outcome:
        """One failed attempt: retried at `retry.at`, or given up on when it is None."""
        error = error[:1000]
        extra: dict[str, Any] = {}
        if throttled:
            extra["throttled"] = True
        if configuration_error:
            extra["configuration_error"] = True
        return _Outcome(
            claimed,
            "notification.failed",
            lambda session: outbox.mark_failed(
                session,
                claimed.id,
                error=error,
                retry_at=retry.at,
                recipients=recipients,
                throttled=throttled,
            ),
            {
                "error": error,
                "will_retry": retry.at is not None,
                "retry_at": retry.at,
                **extra,
                **_recipient_details(claimed, recipients),
            },
        )

    async def _write(self, outcomes: Sequence[_Outcome]) -> None:
        """Mark the rows and audit the attempts of a round, in one transaction."""
        if not outcomes:
            return

        async def work(session: AsyncSession) -> None:
            audit = AuditTrail()
            for o in outcomes:
                await o.mark(session)
                c = o.claimed
                audit.add(
                    o.action,
                    actor=SYSTEM,
                    tenant_id=_tenant_of(c.audience),
                    incident_id=c.incident_id,
                    channel=c.channel.value,
                    event=c.event,
                    attempt=c.attempt,
                    notification_id=c.id,
                    **o.details,
                )
            await audit.flush(session)

        await in_transaction(self._sessions, work, what="outbox record")


@dataclass(frozen=True)
class _Outcome:
    """What one attempt came to: the row's mark and its audit row, written per round."""

    claimed: Claimed
    action: str
    mark: Callable[[AsyncSession], Awaitable[None]]
    details: dict[str, Any]


def _tenant_of(audience: str) -> str | None:
    return audience[len(TENANT_PREFIX) :] if audience.startswith(TENANT_PREFIX) else None


def _context(claimed: Claimed) -> dict[str, Any]:
    return {
        "incident_id": claimed.incident_id,
        "channel": claimed.channel.value,
        "event": claimed.event,
        "attempt": claimed.attempt,
        "audience": claimed.audience or None,
    }


def _as_delivery_error(claimed: Claimed, raised: Exception) -> DeliveryError:
    # A sender's bug must not leave the row leased and silent: treat it as a retryable
    # failure, so it is audited and tried again.
    if isinstance(raised, DeliveryError):
        return raised
    return DeliveryError(claimed.channel, repr(raised), retryable=True)


def _recipient_details(claimed: Claimed, recipients: Sequence[Recipient] | None) -> dict[str, Any]:
    """For e-mail: the audience, how many recipients are in each state, and (at most
    NAMED_MAX of) those not accepted."""
    if recipients is None:
        return {}
    details: dict[str, Any] = {
        "audience": claimed.audience,
        "recipients": {s: len(with_state(recipients, s)) for s in (ACCEPTED, PENDING, REFUSED)},
    }
    for state in (REFUSED, PENDING):
        named = with_state(recipients, state)
        if named:
            details[state] = [r.address for r in named[:NAMED_MAX]]
    return details
