"""Breaker use cases: alert effects (inside ingest), probe outcomes, operator overrides,
and the sweeper that persists time-driven changes.

A breaker row is locked (SELECT ... FOR UPDATE) before it is changed, so two replicas
handling two copies of one alert make exactly one transition; every change is audited
and announced with NOTIFY so that every replica's in-memory view follows on commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db import breakers as breaker_rows
from receiver.db import probes as probe_rows
from receiver.db.audit import ALERTMANAGER, SYSTEM, AuditTrail
from receiver.db.breakers import Versioned
from receiver.db.transaction import database_now, in_transaction
from receiver.domain import breaker as domain
from receiver.domain.alerts import AlertInstance, AlertRole
from receiver.domain.breaker import (
    Breaker,
    BreakerChange,
    BreakerChanges,
    OverrideAction,
    Suppressed,
    Transition,
)
from receiver.errors import Conflict
from receiver.service import incidents as incident_service

# How often a suppressed trip is retried while its alert keeps firing.
SUPPRESSED_RETRY = timedelta(seconds=5)


# --- shared steps ----------------------------------------------------------------------


async def save_changes(
    session: AsyncSession,
    changes: Sequence[BreakerChange],
    *,
    config: ServiceConfig,
    audit: AuditTrail,
    actor: str,
    now: datetime,
) -> None:
    """Write changed rows, their audit entries and one NOTIFY per breaker.

    The changes that time alone had already made before the event (the open period ran
    out, probation passed) are audited as the system's, whoever persists them first:
    every domain step starts with `advance`, so they lead the event list."""
    if not changes:
        return
    for change in changes:
        timed = len(domain.advance(change.before, now=now, policy=config.breaker).events)
        for i, event in enumerate(change.events):
            _audit_event(audit, event, actor=SYSTEM if i < timed else actor, breaker=change.breaker)
    saved = await breaker_rows.save_breakers(
        session, [(c.breaker, next_check_at(c.breaker, config=config, now=now)) for c in changes]
    )
    for change, v in zip(changes, saved, strict=True):
        change.version = v.version


def next_check_at(b: Breaker, *, config: ServiceConfig, now: datetime) -> datetime | None:
    """When the sweeper should look at this row again: when time will move it, or, for a
    trip the guard suppressed, soon, to retry it once there is room."""
    due = domain.next_change_at(b, policy=config.breaker)
    if due is None and domain.awaiting_isolation(b):
        return now + SUPPRESSED_RETRY
    return due


def _audit_event(audit: AuditTrail, event: domain.Event, *, actor: str, breaker: Breaker) -> None:
    if isinstance(event, Transition):
        audit.add(
            "breaker.transition",
            actor=actor,
            tenant_id=event.tenant_id,
            **{"from": event.from_state.value, "to": event.to_state.value},
            reason=event.reason,
            at=event.at,
            trips=breaker.trips,
            streak=breaker.streak,
        )
    elif isinstance(event, Suppressed):
        audit.add(
            "breaker.suppressed",
            actor=actor,
            tenant_id=event.tenant_id,
            isolated=event.isolated,
            limit=event.limit,
            reason="mass-isolation guard: isolating this tenant would exceed the limit",
            at=event.at,
        )


# --- use cases -------------------------------------------------------------------------


async def apply_alert_transitions(
    session: AsyncSession,
    *,
    fired: Sequence[AlertInstance],
    resolved: Sequence[AlertInstance],
    config: ServiceConfig,
    now: datetime,
    audit: AuditTrail,
) -> BreakerChanges:
    """Breaker effects of the isolating alert instances that changed in this delivery.

    The caller holds the guard lock whenever `fired` has isolating instances."""
    fired_by_tenant: dict[str, int] = {}
    for a in fired:
        if a.role is AlertRole.ISOLATING and a.tenant_id:
            fired_by_tenant[a.tenant_id] = fired_by_tenant.get(a.tenant_id, 0) + 1
    resolved_tenants = {
        a.tenant_id for a in resolved if a.role is AlertRole.ISOLATING and a.tenant_id
    }
    tenants = sorted(set(fired_by_tenant) | resolved_tenants)
    if not tenants:
        return BreakerChanges()

    current = await breaker_rows.lock_breakers(session, tenants)
    still_firing = await breaker_rows.firing_isolating_tenants(session, tenants)
    isolated_elsewhere, known = (
        await breaker_rows.guard_counts(session, tenants) if fired_by_tenant else (0, 0)
    )
    changes = BreakerChanges()
    # Isolated tenants among this delivery's, counted once and kept up to date as each
    # one changes (recounting them per tenant was quadratic: 10,000 alerts took seconds
    # of CPU with the guard lock held).
    isolated_here = sum(domain.counts_as_isolated(current[t].state) for t in tenants)
    for tenant in tenants:
        before = b = current[tenant]
        events: list[domain.Event] = []
        if tenant in fired_by_tenant:
            isolated = isolated_elsewhere + isolated_here - domain.counts_as_isolated(before.state)
            out = domain.on_alert_fired(
                b,
                now=now,
                policy=config.breaker,
                isolated=isolated,
                known_tenants=known,
                max_isolated_percent=config.max_isolated_percent,
            )
            b, events = out.breaker, [*events, *out.events]
        if tenant in resolved_tenants:
            out = domain.on_alert_resolved(
                b, now=now, policy=config.breaker, still_firing=tenant in still_firing
            )
            b, events = out.breaker, [*events, *out.events]
        current[tenant] = b
        isolated_here += domain.counts_as_isolated(b.state) - domain.counts_as_isolated(
            before.state
        )
        if b != before or events:
            changes.changed.append(BreakerChange(before=before, breaker=b, events=tuple(events)))
    await save_changes(
        session, changes.changed, config=config, audit=audit, actor=ALERTMANAGER, now=now
    )
    return changes


async def _record(
    session: AsyncSession,
    changes: Sequence[BreakerChange],
    *,
    config: ServiceConfig,
    audit: AuditTrail,
    actor: str,
    now: datetime,
) -> None:
    """Outside a webhook: save the changes, let incidents follow, write the audit trail."""
    await save_changes(session, changes, config=config, audit=audit, actor=actor, now=now)
    await incident_service.after_breaker_changes(
        session, changes=changes, config=config, now=now, audit=audit
    )
    await audit.flush(session)


async def record_outcomes(
    *,
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    success: int,
    failure: int,
    config: ServiceConfig,
) -> Versioned | None:
    """Probe results from a gateway. Only a half-open breaker counts them; None when
    nothing changed."""

    async def work(session: AsyncSession) -> Versioned | None:
        before = (await breaker_rows.lock_breakers(session, [tenant_id]))[tenant_id]
        # The database's clock, read once the row is ours: every replica decides alike.
        now = await database_now(session)
        out = domain.on_outcomes(
            before, success=success, failure=failure, now=now, policy=config.breaker
        )
        # Every report is kept, counted or not: the what-if replay's input.
        await probe_rows.record(
            session,
            tenant_id=tenant_id,
            received_at=now,
            success=success,
            failure=failure,
            state_before=domain.effective(before, now=now, policy=config.breaker).state,
            state_after=out.breaker.state,
        )
        if out.breaker == before:
            return None
        change = BreakerChange(before=before, breaker=out.breaker, events=out.events)
        await _record(
            session, [change], config=config, audit=AuditTrail(), actor="gateway", now=now
        )
        return Versioned(change.version, change.breaker)

    return await in_transaction(sessions, work, what="probe outcomes")


async def override_breaker(
    *,
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    action: OverrideAction,
    reason: str,
    actor: str,
    config: ServiceConfig,
) -> Versioned:
    async def work(session: AsyncSession) -> Versioned:
        before = (await breaker_rows.lock_breakers(session, [tenant_id]))[tenant_id]
        now = await database_now(session)  # once the row is ours, like record_outcomes
        try:
            out = domain.override(
                before, action=action, reason=reason, now=now, policy=config.breaker
            )
        except domain.NotOverridden as exc:
            raise Conflict(str(exc)) from exc
        # The state the operator acted on: an elapsed open period is already half-open.
        acted_on = domain.effective(before, now=now, policy=config.breaker)
        audit = AuditTrail()
        audit.add(
            "breaker.override",
            actor=actor,
            tenant_id=tenant_id,
            action=action.value,
            reason=reason,
            **{"from": acted_on.state.value, "to": out.breaker.state.value},
            at=now,
        )
        # Who forced the breaker and why, for SQL readers; a release clears it.
        forced = action is not OverrideAction.RELEASE
        await breaker_rows.set_override(
            session,
            tenant_id,
            reason=reason if forced else None,
            actor=actor if forced else None,
        )
        change = BreakerChange(before=before, breaker=out.breaker, events=out.events)
        await _record(session, [change], config=config, audit=audit, actor=actor, now=now)
        return Versioned(change.version, change.breaker)

    return await in_transaction(sessions, work, what="breaker override")


async def sweep(
    *,
    sessions: async_sessionmaker[AsyncSession],
    config: ServiceConfig,
    batch: int = 500,
) -> list[Versioned]:
    """Persist and audit the time-driven changes that have fallen due.

    Several replicas sweep at once without waiting on each other or moving one breaker
    twice (lock_due skips locked rows); a row locked by a webhook is simply taken next
    round."""

    async def work(session: AsyncSession) -> list[Versioned]:
        # The database's clock: a replica whose clock runs ahead half-opens nothing early.
        now = await database_now(session)
        due = await breaker_rows.lock_due(session, now=now, limit=batch)
        if not due:
            return []
        changes: list[BreakerChange] = []
        waiting = [b for b in due if domain.awaiting_isolation(b)]
        for before in due:
            if not domain.awaiting_isolation(before):
                out = domain.advance(before, now=now, policy=config.breaker)
                changes.append(BreakerChange(before=before, breaker=out.breaker, events=out.events))
        # A try-lock, not a wait: ingest takes the guard lock before breaker rows, and this
        # already holds rows, so waiting could deadlock. Busy means retry next round.
        if waiting and await breaker_rows.try_lock_guard(session):
            tripped, waiting = await _retry_suppressed(session, waiting, config=config, now=now)
            changes += tripped
        if waiting:
            await breaker_rows.set_next_check(
                session, [b.tenant_id for b in waiting], at=now + SUPPRESSED_RETRY
            )
        changes = [c for c in changes if c.events or c.breaker != c.before]
        if not changes:
            return []
        await _record(session, changes, config=config, audit=AuditTrail(), actor=SYSTEM, now=now)
        return [Versioned(c.version, c.breaker) for c in changes]

    return await in_transaction(sessions, work, what="breaker sweep")


async def _retry_suppressed(
    session: AsyncSession, waiting: Sequence[Breaker], *, config: ServiceConfig, now: datetime
) -> tuple[list[BreakerChange], list[Breaker]]:
    """Trips the guard suppressed, tried again under the guard lock: (tripped, still
    waiting)."""
    isolated, known = await breaker_rows.guard_counts(session, [])
    tripped: list[BreakerChange] = []
    still_waiting: list[Breaker] = []
    for before in waiting:
        out = domain.retry_suppressed(
            before,
            now=now,
            policy=config.breaker,
            isolated=isolated,
            known_tenants=known,
            max_isolated_percent=config.max_isolated_percent,
        )
        if out.tripped:
            isolated += 1
            tripped.append(BreakerChange(before=before, breaker=out.breaker, events=out.events))
        else:
            still_waiting.append(before)
    return tripped, still_waiting
