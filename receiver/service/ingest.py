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

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db.audit import ALERTMANAGER, AuditTrail
from receiver.db.breakers import Versioned
from receiver.db.transaction import in_transaction
from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus, collapse_copies
from receiver.service import breakers as breaker_service
from receiver.service import incidents as incident_service

log = logging.getLogger(__name__)

# Trips are decided one at a time across the whole platform, or two replicas could each
# see room under the mass-isolation guard and together exceed it.
GUARD_LOCK = breaker_service.GUARD_LOCK

# A delivery is written in three round trips whatever its size: `_BEGIN` (an id and the
# stale check), `_WRITE` (alerts, the delivery with its counts, tenants) and the audit
# rows (AuditTrail.flush). Each is one constant statement over arrays, so SQLAlchemy
# caches it and psycopg prepares it once per connection. bench/README.md has the
# measurements that led here (one ORM statement per table, built per delivery, was about
# three times the CPU per delivery).
_BEGIN = text(
    """
    SELECT n.id, s.fingerprint, s.newest
    FROM (SELECT nextval(pg_get_serial_sequence('deliveries', 'id')) AS id) AS n
    LEFT JOIN (
        SELECT fingerprint, max(starts_at) AS newest FROM alerts
        WHERE fingerprint = ANY(CAST(:fingerprints AS text[]))
        GROUP BY fingerprint
    ) AS s ON true
    """
)
# The delivery row is inserted after its alerts in the same statement, so that it carries
# their counts; the foreign key is checked at the end of the statement, when it is there.
# A firing row is turned resolved, never the other way; xmax is 0 on a row this statement
# inserted, non-zero on one it updated. Every tenant that ever alerted is known: the
# mass-isolation guard counts them.
_WRITE = text(
    """
    WITH a AS (
        INSERT INTO alerts (fingerprint, starts_at, ends_at, status, tenant_id, alertname,
                            labels, annotations, generator_url, isolating, platform,
                            delivery_id, resolved_seen_at)
        SELECT r.fingerprint, r.starts_at, r.ends_at, r.status, r.tenant_id, r.alertname,
               r.labels::jsonb, r.annotations::jsonb, r.generator_url, r.isolating,
               r.platform, :delivery_id, r.resolved_seen_at
        FROM unnest(
            CAST(:fingerprint AS text[]), CAST(:starts_at AS timestamptz[]),
            CAST(:ends_at AS timestamptz[]), CAST(:status AS text[]),
            CAST(:tenant_id AS text[]), CAST(:alertname AS text[]), CAST(:labels AS text[]),
            CAST(:annotations AS text[]), CAST(:generator_url AS text[]),
            CAST(:isolating AS boolean[]), CAST(:platform AS boolean[]),
            CAST(:resolved_seen_at AS timestamptz[])
        ) AS r(fingerprint, starts_at, ends_at, status, tenant_id, alertname, labels,
               annotations, generator_url, isolating, platform, resolved_seen_at)
        ON CONFLICT (fingerprint, starts_at) DO UPDATE
        SET status = excluded.status, ends_at = excluded.ends_at,
            annotations = excluded.annotations, resolved_seen_at = excluded.resolved_seen_at
        WHERE alerts.status = 'firing' AND excluded.status = 'resolved'
        RETURNING alerts.fingerprint, alerts.starts_at, (alerts.xmax = 0) AS inserted
    ), d AS (
        INSERT INTO deliveries (id, receiver, status, group_key, group_labels, external_url,
                                alert_count, truncated_alerts, new_alerts, changed_alerts)
        SELECT :delivery_id, :receiver, :delivery_status, :group_key, CAST(:group_labels AS jsonb),
               :external_url, :alert_count, :truncated_alerts,
               count(*) FILTER (WHERE a.inserted), count(*) FILTER (WHERE NOT a.inserted)
        FROM a
    ), t AS (
        INSERT INTO tenants (tenant_id)
        SELECT unnest(CAST(:tenants AS text[]))
        ON CONFLICT (tenant_id) DO NOTHING
    )
    SELECT fingerprint, starts_at, inserted FROM a
    """
)


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


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
    breakers: tuple[Versioned, ...] = ()
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

    delivery_id, stale = await _begin_delivery(session, instances)
    audit = AuditTrail(delivery_id=delivery_id)
    fresh = [a for a in instances if a.key not in stale]
    transitioned = await _write_delivery(
        session, delivery, fresh, instances, delivery_id=delivery_id, now=now
    )

    new = changed = duplicates = 0
    fired: list[AlertInstance] = []
    resolved: list[AlertInstance] = []
    for alert in instances:
        details: dict[str, Any] = {
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
    await audit.flush(session)
    return IngestResult(
        delivery_id=delivery_id,
        alerts=len(delivery.alerts),
        new=new,
        changed=changed,
        duplicates=duplicates,
        stale=len(stale),
        truncated=delivery.truncated_alerts,
        breakers=tuple(Versioned(c.version, c.breaker) for c in breaker_changes.changed),
        transitions=breaker_changes.transition_count,
        incidents=tuple(incident_ids),
    )


async def _begin_delivery(
    session: AsyncSession, instances: Sequence[AlertInstance]
) -> tuple[int, set[tuple[str, datetime]]]:
    """The delivery's id, and its stale firings: firing copies of an instance older than
    one already recorded for the same labels.

    Such a copy arrives when a delivery from before the alert resolved and fired again is
    retried late; letting it in would re-trip a breaker for a failure that is over."""
    firing = [a for a in instances if a.status is AlertStatus.FIRING]
    rows = (
        await session.execute(_BEGIN, {"fingerprints": sorted({a.fingerprint for a in firing})})
    ).all()
    newest = {fp: starts_at for _, fp, starts_at in rows if fp is not None}
    stale = {
        a.key for a in firing if a.fingerprint in newest and newest[a.fingerprint] > a.starts_at
    }
    return int(rows[0][0]), stale


async def _write_delivery(
    session: AsyncSession,
    delivery: WebhookDelivery,
    fresh: Sequence[AlertInstance],
    instances: Sequence[AlertInstance],
    *,
    delivery_id: int,
    now: datetime,
) -> dict[tuple[str, datetime], bool]:
    """Insert new instances, turn firing ones resolved (never resolved back to firing),
    record the delivery and register its tenants.

    Returns the instances that changed, each with True when it was inserted. PostgreSQL
    decides each row atomically, so of two concurrent copies exactly one sees the change."""
    resolved = [a.status is AlertStatus.RESOLVED for a in fresh]
    params: dict[str, Any] = {
        "delivery_id": delivery_id,
        "fingerprint": [a.fingerprint for a in fresh],
        "starts_at": [a.starts_at for a in fresh],
        "ends_at": [
            (a.ends_at or now) if r else None for a, r in zip(fresh, resolved, strict=True)
        ],
        "status": [a.status.value for a in fresh],
        "tenant_id": [a.tenant_id for a in fresh],
        "alertname": [a.alertname for a in fresh],
        "labels": [_json(a.labels) for a in fresh],
        "annotations": [_json(a.annotations) for a in fresh],
        "generator_url": [a.generator_url for a in fresh],
        "isolating": [a.role is AlertRole.ISOLATING for a in fresh],
        "platform": [a.role is AlertRole.PLATFORM for a in fresh],
        "resolved_seen_at": [now if r else None for r in resolved],
        "receiver": delivery.receiver,
        "delivery_status": delivery.status,
        "group_key": delivery.group_key,
        "group_labels": _json(delivery.group_labels),
        "external_url": delivery.external_url,
        "alert_count": len(delivery.alerts),
        "truncated_alerts": delivery.truncated_alerts,
        # Sorted: concurrent deliveries take the tenants' index locks in one order.
        "tenants": sorted({a.tenant_id for a in instances if a.tenant_id}),
    }
    result = await session.execute(_WRITE, params)
    return {(fp, starts_at): bool(inserted) for fp, starts_at, inserted in result.tuples()}
