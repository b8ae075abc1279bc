"""ingest_webhook: one Alertmanager delivery, one transaction.

Alertmanager delivers at least once (retries, HA peers, repeat intervals), so every
effect hangs off an alert instance's *transition*, found by an atomic upsert keyed on
(fingerprint, starts_at): a copy that changes nothing is recorded as a duplicate and has
no effect, and a resolved instance is never turned back to firing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.config import ServiceConfig
from receiver.db import breakers as breaker_rows
from receiver.db import ingest as ingest_rows
from receiver.db.audit import ALERTMANAGER, AuditTrail
from receiver.db.breakers import Versioned
from receiver.db.transaction import in_transaction
from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus, collapse_copies
from receiver.service import breakers as breaker_service
from receiver.service import incidents as incident_service


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


@dataclass
class _Sorted:
    """The delivery's instances by what they changed."""

    new: int = 0
    changed: int = 0
    duplicates: int = 0
    fired: list[AlertInstance] = field(default_factory=list)
    resolved: list[AlertInstance] = field(default_factory=list)


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
    """Record the alerts, then let breakers and incidents follow their transitions."""
    instances = collapse_copies(delivery.alerts)
    if any(a.role is AlertRole.ISOLATING and a.status is AlertStatus.FIRING for a in instances):
        # Trips are decided one at a time across the platform (the mass-isolation guard).
        await breaker_rows.lock_guard(session)
    delivery_id, stale = await _begin_delivery(session, instances)
    audit = AuditTrail(delivery_id=delivery_id)
    transitioned = await _write_delivery(
        session, delivery, instances, stale=stale, delivery_id=delivery_id, now=now
    )
    alerts = _sort_alerts(instances, stale=stale, transitioned=transitioned, audit=audit, now=now)
    breaker_changes = await breaker_service.apply_alert_transitions(
        session, fired=alerts.fired, resolved=alerts.resolved, config=config, now=now, audit=audit
    )
    incident_ids = await incident_service.apply_alert_transitions(
        session,
        fired=alerts.fired,
        resolved=alerts.resolved,
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
        new=alerts.new,
        changed=alerts.changed,
        duplicates=alerts.duplicates,
    )
    await audit.flush(session)
    return IngestResult(
        delivery_id=delivery_id,
        alerts=len(delivery.alerts),
        new=alerts.new,
        changed=alerts.changed,
        duplicates=alerts.duplicates,
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
    delivery_id, newest = await ingest_rows.begin_delivery(session, [a.fingerprint for a in firing])
    stale = {
        a.key for a in firing if a.fingerprint in newest and newest[a.fingerprint] > a.starts_at
    }
    return delivery_id, stale


async def _write_delivery(
    session: AsyncSession,
    delivery: WebhookDelivery,
    instances: Sequence[AlertInstance],
    *,
    stale: set[tuple[str, datetime]],
    delivery_id: int,
    now: datetime,
) -> dict[tuple[str, datetime], bool]:
    """Record the fresh instances and the delivery; every tenant that alerted becomes
    known (the mass-isolation guard counts them). Returns the instances that changed,
    each with True when it was inserted."""
    return await ingest_rows.write_delivery(
        session,
        [a for a in instances if a.key not in stale],
        delivery_id=delivery_id,
        receiver=delivery.receiver,
        status=delivery.status,
        group_key=delivery.group_key,
        group_labels=delivery.group_labels,
        external_url=delivery.external_url,
        alert_count=len(delivery.alerts),
        truncated_alerts=delivery.truncated_alerts,
        tenants=[a.tenant_id for a in instances if a.tenant_id],
        now=now,
    )


def _sort_alerts(
    instances: Sequence[AlertInstance],
    *,
    stale: set[tuple[str, datetime]],
    transitioned: Mapping[tuple[str, datetime], bool],
    audit: AuditTrail,
    now: datetime,
) -> _Sorted:
    """Count and audit each instance: a duplicate (stale, or a copy that changed
    nothing), or a transition to firing or to resolved."""
    out = _Sorted()
    for alert in instances:
        details: dict[str, Any] = {
            "fingerprint": alert.fingerprint,
            "startsAt": alert.starts_at,
            "alertname": alert.alertname,
            # The receiver's clock when it decided (occurred_at is the database's).
            "at": now,
        }
        inserted = transitioned.get(alert.key)
        if alert.key in stale or inserted is None:
            out.duplicates += 1
            if alert.key in stale:
                details = {
                    "reason": "stale: a newer instance of these labels is already recorded",
                    **details,
                }
            audit.add(
                "alert.duplicate",
                actor=ALERTMANAGER,
                tenant_id=alert.tenant_id,
                status=alert.status.value,
                **details,
            )
            continue
        if inserted:
            out.new += 1
        else:
            out.changed += 1
        if alert.status is AlertStatus.FIRING:
            out.fired.append(alert)
            audit.add("alert.fired", actor=ALERTMANAGER, tenant_id=alert.tenant_id, **details)
        else:
            out.resolved.append(alert)
            audit.add(
                "alert.resolved",
                actor=ALERTMANAGER,
                tenant_id=alert.tenant_id,
                endsAt=alert.ends_at or now,
                seen_firing=not inserted,
                **details,
            )
    return out
