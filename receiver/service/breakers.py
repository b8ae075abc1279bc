"""Breaker use cases: alert effects (inside ingest), probe outcomes, operator overrides,
and the sweeper that persists time-driven changes.

A breaker row is locked (SELECT ... FOR UPDATE) before it is changed, so two replicas
handling two copies of one alert make exactly one transition; every change is audited
and announced with NOTIFY so that every replica's in-memory view follows on commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db.audit import ALERTMANAGER, SYSTEM, AuditTrail
from receiver.db.breakers import (
    COLUMNS,
    NOTIFY_CHANNEL,
    Versioned,
    breaker_from_row,
    notification_payload,
)
from receiver.db.tables import Alert, Tenant
from receiver.db.tables import Breaker as BreakerRow
from receiver.db.transaction import in_transaction
from receiver.domain import breaker as domain
from receiver.domain.alerts import AlertInstance, AlertRole
from receiver.domain.breaker import (
    Breaker,
    BreakerChange,
    BreakerChanges,
    BreakerState,
    OverrideAction,
    Suppressed,
    Transition,
)
from receiver.errors import Conflict
from receiver.service import incidents as incident_service

# Same key as ingest's: trips are decided one at a time across the platform.
GUARD_LOCK = 7262022
# How often a suppressed trip is retried while its alert keeps firing.
SUPPRESSED_RETRY = timedelta(seconds=5)
_ISOLATED_STATES = [s.value for s in BreakerState if domain.counts_as_isolated(s)]


# --- shared steps ----------------------------------------------------------------------


async def lock_breakers(session: AsyncSession, tenants: Sequence[str]) -> dict[str, Breaker]:
    """Create missing rows and lock all of them, in tenant order (no deadlocks)."""
    ordered = sorted(set(tenants))
    await session.execute(
        pg_insert(BreakerRow)
        .values([{"tenant_id": t} for t in ordered])
        .on_conflict_do_nothing(index_elements=[BreakerRow.tenant_id])
    )
    rows = await session.execute(
        select(BreakerRow.__table__)
        .where(BreakerRow.tenant_id.in_(ordered))
        .order_by(BreakerRow.tenant_id)
        .with_for_update()
    )
    return {row["tenant_id"]: breaker_from_row(row) for row in rows.mappings()}


# One statement for any number of changed breakers (a grouped delivery can trip hundreds):
# SQLAlchemy caches it and psycopg prepares it, as audit.py does for audit rows.
_UPDATE_BREAKERS = text(
    """
    UPDATE breakers AS b
    SET state = v.state, opened_at = v.opened_at, trips = v.trips, streak = v.streak,
        half_open_at = v.half_open_at, probe_successes = v.probe_successes,
        probe_failures = v.probe_failures, alert_firing = v.alert_firing,
        resolved_at = v.resolved_at, changed_at = v.changed_at,
        next_check_at = v.next_check_at, version = b.version + 1, updated_at = now()
    FROM unnest(
        CAST(:tenant_id AS text[]), CAST(:state AS text[]), CAST(:opened_at AS timestamptz[]),
        CAST(:trips AS int[]), CAST(:streak AS int[]), CAST(:half_open_at AS timestamptz[]),
        CAST(:probe_successes AS int[]), CAST(:probe_failures AS int[]),
        CAST(:alert_firing AS boolean[]), CAST(:resolved_at AS timestamptz[]),
        CAST(:changed_at AS timestamptz[]), CAST(:next_check_at AS timestamptz[])
    ) AS v(tenant_id, state, opened_at, trips, streak, half_open_at, probe_successes,
           probe_failures, alert_firing, resolved_at, changed_at, next_check_at)
    WHERE b.tenant_id = v.tenant_id
    RETURNING b.tenant_id, b.version
    """
)


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
    columns: dict[str, list[Any]] = {name: [] for name in (*COLUMNS, "next_check_at")}
    for change in changes:
        b = change.breaker
        for name in COLUMNS:
            columns[name].append(getattr(b, name))
        columns["next_check_at"].append(next_check_at(b, config=config, now=now))
        timed = len(domain.advance(change.before, now=now, policy=config.breaker).events)
        for i, event in enumerate(change.events):
            _audit_event(audit, event, actor=SYSTEM if i < timed else actor, breaker=b)
    columns["state"] = [state.value for state in columns["state"]]
    result = await session.execute(_UPDATE_BREAKERS, columns)
    versions = dict(result.tuples().all())
    for change in changes:
        change.version = versions[change.breaker.tenant_id]
    payloads = [notification_payload(Versioned(c.version, c.breaker)) for c in changes]
    # Delivered to every listener at commit, in commit order, and never if we roll back.
    notify = func.pg_notify(
        NOTIFY_CHANNEL, func.unnest(bindparam("payloads", payloads, type_=ARRAY(Text)))
    )
    await session.execute(select(notify))


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
        )


async def _guard_inputs(session: AsyncSession, exclude: Sequence[str]) -> tuple[int, int]:
    """(tenants isolated other than `exclude`, known tenants)."""
    isolated = await session.scalar(
        select(func.count())
        .select_from(BreakerRow)
        .where(BreakerRow.state.in_(_ISOLATED_STATES), BreakerRow.tenant_id.not_in(exclude))
    )
    known = await session.scalar(select(func.count()).select_from(Tenant))
    return int(isolated or 0), int(known or 0)


async def _firing_isolating_tenants(session: AsyncSession, tenants: Sequence[str]) -> set[str]:
    rows = await session.execute(
        select(Alert.tenant_id)
        .where(Alert.status == "firing", Alert.isolating, Alert.tenant_id.in_(tenants))
        .distinct()
    )
    return {t for (t,) in rows.tuples() if t is not None}


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

    current = await lock_breakers(session, tenants)
    still_firing = await _firing_isolating_tenants(session, tenants)
    isolated_elsewhere, known = await _guard_inputs(session, tenants) if fired_by_tenant else (0, 0)
    changes = BreakerChanges()
    for tenant in tenants:
        before = b = current[tenant]
        events: list[domain.Event] = []
        if tenant in fired_by_tenant:
            isolated = isolated_elsewhere + sum(
                domain.counts_as_isolated(current[t].state) for t in tenants if t != tenant
            )
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
    now: datetime,
) -> Versioned | None:
    """Probe results from a gateway. Only a half-open breaker counts them; None when
    nothing changed."""

    async def work(session: AsyncSession) -> Versioned | None:
        before = (await lock_breakers(session, [tenant_id]))[tenant_id]
        out = domain.on_outcomes(
            before, success=success, failure=failure, now=now, policy=config.breaker
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
    now: datetime,
) -> Versioned:
    async def work(session: AsyncSession) -> Versioned:
        before = (await lock_breakers(session, [tenant_id]))[tenant_id]
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
        )
        # Who forced the breaker and why, for SQL readers; a release clears it.
        forced = action is not OverrideAction.RELEASE
        await session.execute(
            update(BreakerRow)
            .where(BreakerRow.tenant_id == tenant_id)
            .values(
                override_reason=reason if forced else None,
                override_actor=actor if forced else None,
            )
        )
        change = BreakerChange(before=before, breaker=out.breaker, events=out.events)
        await _record(session, [change], config=config, audit=audit, actor=actor, now=now)
        return Versioned(change.version, change.breaker)

    return await in_transaction(sessions, work, what="breaker override")


async def sweep(
    *,
    sessions: async_sessionmaker[AsyncSession],
    config: ServiceConfig,
    now: datetime,
    batch: int = 500,
) -> list[Versioned]:
    """Persist and audit the time-driven changes that have fallen due.

    SKIP LOCKED lets several replicas sweep at once without waiting on each other or
    moving one breaker twice; a row locked by a webhook is simply taken next round."""

    async def work(session: AsyncSession) -> list[Versioned]:
        rows = await session.execute(
            select(BreakerRow.__table__)
            .where(BreakerRow.next_check_at <= now)
            .order_by(BreakerRow.next_check_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        due = [breaker_from_row(row) for row in rows.mappings()]
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
        if waiting and await session.scalar(select(func.pg_try_advisory_xact_lock(GUARD_LOCK))):
            isolated, known = await _guard_inputs(session, [])
            still_waiting = []
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
                    changes.append(
                        BreakerChange(before=before, breaker=out.breaker, events=out.events)
                    )
                else:
                    still_waiting.append(before)
            waiting = still_waiting
        if waiting:
            await session.execute(
                update(BreakerRow)
                .where(BreakerRow.tenant_id.in_([b.tenant_id for b in waiting]))
                .values(next_check_at=now + SUPPRESSED_RETRY)
            )
        changes = [c for c in changes if c.events or c.breaker != c.before]
        if not changes:
            return []
        await _record(session, changes, config=config, audit=AuditTrail(), actor=SYSTEM, now=now)
        return [Versioned(c.version, c.breaker) for c in changes]

    return await in_transaction(sessions, work, what="breaker sweep")
