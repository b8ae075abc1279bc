"""Reconciliation with Alertmanager's API (DESIGN.md "The truth from Alertmanager").

app.py runs the round on every replica every RECEIVER_RECONCILE_SECONDS:

    if await claim(...):                       # the lease: one replica at a time
        answers = await peers.poll_peers(...)  # HTTP, outside any transaction
        await apply_poll(..., answers=answers) # one transaction

`apply_poll` compares the peers' union with what is stored (domain.reconcile), and
records the changes through the same logic as a webhook (service.ingest.record_instances
and follow_transitions):
a never-recorded active alert fires with all its effects, a firing instance absent from
two consecutive complete polls resolves with all its effects. Each change is one
`alert.reconciled` row, actor `reconciler`; the effects that follow (breaker transitions,
incidents) carry that actor too. A poll in which a peer failed changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db import breakers as breaker_rows
from receiver.db import heartbeat as heartbeat_rows
from receiver.db import ingest as ingest_rows
from receiver.db import reconcile as rows
from receiver.db.audit import ALERTMANAGER, AuditTrail
from receiver.db.breakers import Versioned
from receiver.db.reconcile import ReconcilerRecord
from receiver.db.transaction import in_transaction
from receiver.domain.alerts import AlertInstance, AlertStatus
from receiver.domain.heartbeat import HeartbeatState
from receiver.domain.reconcile import (
    AUDIT_ACTION,
    RECONCILER_ACTOR,
    InstanceKey,
    PeerAnswer,
    PeerFailed,
    ReconcileChange,
    reconcile,
    reported_fingerprints,
)
from receiver.service import ingest

__all__ = [
    "PipelineStatus",
    "ReconcileOutcome",
    "ReconcilerRecord",
    "apply_poll",
    "claim",
    "pipeline_status",
]


@dataclass(frozen=True)
class ReconcileOutcome:
    """One applied poll: whether it was complete, what it changed."""

    applied: bool  # False: the lease was lost meanwhile, nothing was done
    complete: bool = False
    fired: int = 0
    resolved: int = 0
    superseded: int = 0
    absent: int = 0
    failed: tuple[PeerFailed, ...] = ()
    breakers: tuple[Versioned, ...] = ()
    incidents: tuple[str, ...] = field(default_factory=tuple)


async def claim(
    *,
    sessions: async_sessionmaker[AsyncSession],
    owner: str,
    interval_seconds: float,
    lease_seconds: float,
) -> bool:
    """Take the reconciler's lease when a poll is due (the last one, by any replica, at
    least 0.8 interval ago) and no other replica holds it."""

    async def work(session: AsyncSession) -> bool:
        return await rows.claim(
            session, owner=owner, lease_seconds=lease_seconds, gap_seconds=0.8 * interval_seconds
        )

    return await in_transaction(sessions, work, what="reconciler lease")


@dataclass(frozen=True)
class PipelineStatus:
    """What /readyz reports of the truth from Alertmanager, as any replica sees it."""

    reconciler: ReconcilerRecord | None  # None: never ran on this database
    heartbeat: HeartbeatState | None  # None: no receiver with a heartbeat started yet


async def pipeline_status(*, sessions: async_sessionmaker[AsyncSession]) -> PipelineStatus:
    async def work(session: AsyncSession) -> PipelineStatus:
        return PipelineStatus(
            reconciler=await rows.read(session), heartbeat=await heartbeat_rows.read(session)
        )

    return await in_transaction(sessions, work, what="pipeline status")


async def apply_poll(
    *,
    sessions: async_sessionmaker[AsyncSession],
    owner: str,
    answers: Sequence[PeerAnswer],
    config: ServiceConfig,
    now: datetime,
) -> ReconcileOutcome:
    """Apply one poll's answers in one transaction, if `owner` still holds the lease."""

    async def work(session: AsyncSession) -> ReconcileOutcome:
        if not await rows.lock_if_owner(session, owner=owner):
            return ReconcileOutcome(applied=False)
        return await _apply(session, answers=answers, config=config, now=now)

    return await in_transaction(sessions, work, what="reconciliation")


async def _apply(
    session: AsyncSession,
    *,
    answers: Sequence[PeerAnswer],
    config: ServiceConfig,
    now: datetime,
) -> ReconcileOutcome:
    previous = await rows.absent(session)
    stored = await rows.stored_instances(session, reported_fingerprints(answers))
    result = reconcile(stored, answers, previous, tenant_label=config.tenant_label)
    failed = [{"peer": f.peer, "reason": f.reason} for f in result.failed]
    if not result.complete:
        await rows.finish(session, complete=False, failed=failed, fired=0, resolved=0)
        return ReconcileOutcome(applied=True, absent=len(previous), failed=result.failed)

    applied = await _record_changes(session, result.changes, config=config, now=now)
    await rows.replace_absent(session, result.absent, previous=previous, now=now)
    changed = [c for c in result.changes if c.key in applied.changed_keys]
    fired = sum(c.to_status is AlertStatus.FIRING for c in changed)
    await rows.finish(
        session, complete=True, failed=failed, fired=fired, resolved=len(changed) - fired
    )
    return ReconcileOutcome(
        applied=True,
        complete=True,
        fired=fired,
        resolved=len(changed) - fired,
        superseded=len(applied.superseded),
        absent=len(result.absent),
        breakers=tuple(Versioned(c.version, c.breaker) for c in applied.breaker_changes.changed),
        incidents=tuple(applied.incidents),
    )


async def _record_changes(
    session: AsyncSession,
    changes: Sequence[ReconcileChange],
    *,
    config: ServiceConfig,
    now: datetime,
) -> ingest.Applied:
    """The changes through the webhook's logic (superseding, breakers, incidents)."""
    if not changes:
        return ingest.Applied()
    instances = ingest.prepare([c.instance for c in changes])
    if ingest.needs_guard(instances):
        await breaker_rows.lock_guard(session)
    known = await ingest_rows.known_instances(session, [a.fingerprint for a in instances])

    async def write(
        fresh: Sequence[AlertInstance], tenants: Sequence[str]
    ) -> dict[InstanceKey, bool]:
        return await ingest_rows.write_alerts(session, fresh, tenants=tenants, now=now)

    audit = AuditTrail()
    applied = await ingest.record_instances(
        session,
        instances,
        known=known,
        write=write,
        auditor=ReconcilerAuditor({c.key: c for c in changes}, now=now),
        config=config,
        now=now,
        audit=audit,
    )
    await ingest.follow_transitions(session, applied, config=config, now=now, audit=audit)
    # What followed from the reconciler's changes is the reconciler's doing.
    for row in audit.rows:
        if row["actor"] == ALERTMANAGER:
            row["actor"] = RECONCILER_ACTOR
    await audit.flush(session)
    return applied


@dataclass(frozen=True)
class ReconcilerAuditor:
    """One `alert.reconciled` row per instance the reconciler changed; a change that a
    concurrent webhook made first is nobody's to audit twice."""

    changes: Mapping[InstanceKey, ReconcileChange]
    now: datetime
    actor: str = RECONCILER_ACTOR

    def changed(self, audit: AuditTrail, alert: AlertInstance, *, inserted: bool) -> None:
        # `at`: the clock the decision used, where the what-if replay places the change.
        details: dict[str, Any] = {**self.changes[alert.key].audit_details(), "at": self.now}
        audit.add(AUDIT_ACTION, actor=self.actor, tenant_id=alert.tenant_id, **details)

    def duplicate(self, audit: AuditTrail, alert: AlertInstance, *, stale: bool) -> None:
        return None
