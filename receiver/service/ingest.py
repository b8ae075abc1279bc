"""ingest_webhook: one Alertmanager delivery, one transaction.

Alertmanager delivers at least once (retries, HA peers, repeat intervals), so every
effect hangs off an alert instance's *transition*, found by an atomic upsert keyed on
(fingerprint, starts_at): a copy that changes nothing is recorded as a duplicate and has
no effect, and a resolved instance is never turned back to firing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, literal_column, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db.tables import Alert, Delivery, Tenant
from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus, collapse_copies
from receiver.service import breakers as breaker_service
from receiver.service import incidents as incident_service
from receiver.service.audit import ALERTMANAGER, AuditTrail
from receiver.service.transaction import in_transaction

log = logging.getLogger(__name__)

# PostgreSQL takes at most 65,535 bind parameters per statement; an alert row uses 13.
_ROWS_PER_STATEMENT = 2000
# Trips are decided one at a time across the whole platform, or two replicas could each
# see room under the mass-isolation guard and together exceed it.
GUARD_LOCK = 7262022


@dataclass(frozen=True)
class WebhookDelivery:
    receiver: str
    status: str
    group_key: str
    group_labels: dict[str, str]
    external_url: str
    truncated_alerts: int
    alerts: Sequence[AlertInstance]


@dataclass(frozen=True)
class IngestResult:
    delivery_id: int
    alerts: int
    new: int
    changed: int
    duplicates: int
    stale: int
    truncated: int
    breakers: tuple[breaker_service.Versioned, ...] = ()
    transitions: int = 0
    incidents: tuple[str, ...] = field(default_factory=tuple)


async def ingest_webhook(
    *,
    sessions: async_sessionmaker[AsyncSession],
    delivery: WebhookDelivery,
    config: ServiceConfig,
    now: datetime,
) -> IngestResult:
    async def work(session: AsyncSession) -> IngestResult:
        return await _ingest(session, delivery=delivery, config=config, now=now)

    return await in_transaction(sessions, work, what="webhook delivery")


async def _ingest(
    session: AsyncSession, *, delivery: WebhookDelivery, config: ServiceConfig, now: datetime
) -> IngestResult:
    instances = collapse_copies(delivery.alerts)
    may_trip = any(
        a.role is AlertRole.ISOLATING and a.status is AlertStatus.FIRING for a in instances
    )
    if may_trip:
        await session.execute(select(func.pg_advisory_xact_lock(GUARD_LOCK)))

    delivery_id = await _record_delivery(session, delivery)
    audit = AuditTrail(delivery_id=delivery_id)
    stale = await _stale_firings(session, instances)
    fresh = [a for a in instances if a.key not in stale]
    transitioned = await _upsert_alerts(session, fresh, delivery_id=delivery_id, now=now)
    await _register_tenants(session, instances)

    new = changed = duplicates = 0
    fired: list[AlertInstance] = []
    resolved: list[AlertInstance] = []
    for alert in instances:
        details = {
            "fingerprint": alert.fingerprint,
            "startsAt": alert.starts_at,
            "alertname": alert.alertname,
        }
        outcome = transitioned.get(alert.key)
        if alert.key in stale:
            duplicates += 1
            audit.add(
                "alert.duplicate",
                actor=ALERTMANAGER,
                tenant_id=alert.tenant_id,
                status=alert.status.value,
                reason="stale: a newer instance of these labels is already recorded",
                **details,
            )
        elif outcome is None:
            duplicates += 1
            audit.add(
                "alert.duplicate",
                actor=ALERTMANAGER,
                tenant_id=alert.tenant_id,
                status=alert.status.value,
                **details,
            )
        else:
            inserted = outcome
            if inserted:
                new += 1
            else:
                changed += 1
            if alert.status is AlertStatus.FIRING:
                fired.append(alert)
                audit.add("alert.fired", actor=ALERTMANAGER, tenant_id=alert.tenant_id, **details)
            else:
                resolved.append(alert)
                audit.add(
                    "alert.resolved",
                    actor=ALERTMANAGER,
                    tenant_id=alert.tenant_id,
                    endsAt=alert.ends_at or now,
                    seen_firing=not inserted,
                    **details,
                )

    breaker_changes = await breaker_service.apply_alert_transitions(
        session, fired=fired, resolved=resolved, config=config, now=now, audit=audit
    )
    incident_ids = await incident_service.apply_alert_transitions(
        session,
        fired=fired,
        resolved=resolved,
        breaker_changes=breaker_changes,
        config=config,
        now=now,
        audit=audit,
    )

    audit.add(
        "delivery.accepted",
        actor=ALERTMANAGER,
        alerts=len(delivery.alerts),
        truncated=delivery.truncated_alerts,
        groupKey=delivery.group_key,
        receiver=delivery.receiver,
        status=delivery.status,
        new=new,
        changed=changed,
        duplicates=duplicates,
    )
    await session.execute(
        Delivery.__table__.update()
        .where(Delivery.id == delivery_id)
        .values(new_alerts=new, changed_alerts=changed)
    )
    await audit.flush(session)
    return IngestResult(
        delivery_id=delivery_id,
        alerts=len(delivery.alerts),
        new=new,
        changed=changed,
        duplicates=duplicates,
        stale=len(stale),
        truncated=delivery.truncated_alerts,
        breakers=tuple(
            breaker_service.Versioned(c.version, c.breaker) for c in breaker_changes.changed
        ),
        transitions=breaker_changes.transition_count,
        incidents=tuple(incident_ids),
    )


async def _record_delivery(session: AsyncSession, delivery: WebhookDelivery) -> int:
    result = await session.execute(
        insert(Delivery)
        .values(
            receiver=delivery.receiver,
            status=delivery.status,
            group_key=delivery.group_key,
            group_labels=delivery.group_labels,
            external_url=delivery.external_url,
            alert_count=len(delivery.alerts),
            truncated_alerts=delivery.truncated_alerts,
            new_alerts=0,
            changed_alerts=0,
        )
        .returning(Delivery.id)
    )
    return int(result.scalar_one())


async def _stale_firings(
    session: AsyncSession, instances: Sequence[AlertInstance]
) -> set[tuple[str, datetime]]:
    """Firing copies of an instance older than one already recorded for the same labels.

    Such a copy arrives when a delivery from before the alert resolved and fired again is
    retried late; letting it in would re-trip a breaker for a failure that is over."""
    firing = [a for a in instances if a.status is AlertStatus.FIRING]
    if not firing:
        return set()
    rows = await session.execute(
        select(Alert.fingerprint, func.max(Alert.starts_at))
        .where(Alert.fingerprint.in_({a.fingerprint for a in firing}))
        .group_by(Alert.fingerprint)
    )
    newest = dict(rows.tuples().all())
    return {
        a.key for a in firing if a.fingerprint in newest and newest[a.fingerprint] > a.starts_at
    }


async def _upsert_alerts(
    session: AsyncSession,
    instances: Sequence[AlertInstance],
    *,
    delivery_id: int,
    now: datetime,
) -> dict[tuple[str, datetime], bool]:
    """Insert new instances, turn firing ones resolved; never resolved back to firing.

    Returns the instances that changed, each with True when it was inserted. PostgreSQL
    decides each row atomically, so of two concurrent copies exactly one sees the change."""
    changed: dict[tuple[str, datetime], bool] = {}
    for start in range(0, len(instances), _ROWS_PER_STATEMENT):
        chunk = instances[start : start + _ROWS_PER_STATEMENT]
        rows: list[dict[str, Any]] = [
            {
                "fingerprint": a.fingerprint,
                "starts_at": a.starts_at,
                "ends_at": (a.ends_at or now) if a.status is AlertStatus.RESOLVED else None,
                "status": a.status.value,
                "tenant_id": a.tenant_id,
                "alertname": a.alertname,
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "generator_url": a.generator_url,
                "isolating": a.role is AlertRole.ISOLATING,
                "platform": a.role is AlertRole.PLATFORM,
                "delivery_id": delivery_id,
                "resolved_seen_at": now if a.status is AlertStatus.RESOLVED else None,
            }
            for a in chunk
        ]
        stmt = pg_insert(Alert).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Alert.fingerprint, Alert.starts_at],
            set_={
                "status": stmt.excluded.status,
                "ends_at": stmt.excluded.ends_at,
                "annotations": stmt.excluded.annotations,
                "resolved_seen_at": stmt.excluded.resolved_seen_at,
            },
            where=text("alerts.status = 'firing' AND excluded.status = 'resolved'"),
        ).returning(
            Alert.fingerprint,
            Alert.starts_at,
            # xmax is 0 on a row this statement inserted, non-zero on one it updated.
            literal_column("(xmax = 0)").label("inserted"),
        )
        result = await session.execute(stmt)
        for fp, starts_at, inserted in result.tuples():
            changed[(fp, starts_at)] = bool(inserted)
    return changed


async def _register_tenants(session: AsyncSession, instances: Sequence[AlertInstance]) -> None:
    """Every tenant that ever alerted is known: the mass-isolation guard counts them."""
    tenants = sorted({a.tenant_id for a in instances if a.tenant_id})
    if tenants:
        await session.execute(
            pg_insert(Tenant)
            .values([{"tenant_id": t} for t in tenants])
            .on_conflict_do_nothing(index_elements=[Tenant.tenant_id])
        )
