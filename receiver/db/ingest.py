"""The statements of one webhook delivery: its id and stale check, then its alerts, the
delivery row and its tenants, each in one round trip whatever the delivery's size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.json import dumps
from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus

# A delivery is written in three round trips whatever its size: `begin_delivery` (an id
# and the stale check), `write_delivery` (alerts, the delivery with its counts, tenants)
# and the audit rows (AuditTrail.flush). Each is one constant statement over arrays, so
# SQLAlchemy caches it and psycopg prepares it once per connection. bench/README.md has
# the measurements that led here (one ORM statement per table, built per delivery, was
# about three times the CPU per delivery).
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


async def begin_delivery(
    session: AsyncSession, fingerprints: Sequence[str]
) -> tuple[int, dict[str, datetime]]:
    """A new delivery id, and the newest recorded starts_at of each of `fingerprints`
    that has been seen before."""
    rows = (await session.execute(_BEGIN, {"fingerprints": sorted(set(fingerprints))})).all()
    newest = {fp: starts_at for _, fp, starts_at in rows if fp is not None}
    return int(rows[0][0]), newest


async def write_delivery(
    session: AsyncSession,
    alerts: Sequence[AlertInstance],
    *,
    delivery_id: int,
    receiver: str,
    status: str,
    group_key: str,
    group_labels: Mapping[str, str],
    external_url: str,
    alert_count: int,
    truncated_alerts: int,
    tenants: Sequence[str],
    now: datetime,
) -> dict[tuple[str, datetime], bool]:
    """Insert new instances, turn firing ones resolved (never resolved back to firing),
    record the delivery and register `tenants`. A resolved instance without an end ends
    `now`.

    Returns the instances that changed, each with True when it was inserted. PostgreSQL
    decides each row atomically, so of two concurrent copies exactly one sees the change."""
    resolved = [a.status is AlertStatus.RESOLVED for a in alerts]
    params: dict[str, Any] = {
        "delivery_id": delivery_id,
        "fingerprint": [a.fingerprint for a in alerts],
        "starts_at": [a.starts_at for a in alerts],
        "ends_at": [
            (a.ends_at or now) if r else None for a, r in zip(alerts, resolved, strict=True)
        ],
        "status": [a.status.value for a in alerts],
        "tenant_id": [a.tenant_id for a in alerts],
        "alertname": [a.alertname for a in alerts],
        "labels": [dumps(a.labels) for a in alerts],
        "annotations": [dumps(a.annotations) for a in alerts],
        "generator_url": [a.generator_url for a in alerts],
        "isolating": [a.role is AlertRole.ISOLATING for a in alerts],
        "platform": [a.role is AlertRole.PLATFORM for a in alerts],
        "resolved_seen_at": [now if r else None for r in resolved],
        "receiver": receiver,
        "delivery_status": status,
        "group_key": group_key,
        "group_labels": dumps(group_labels),
        "external_url": external_url,
        "alert_count": alert_count,
        "truncated_alerts": truncated_alerts,
        # Sorted: concurrent deliveries take the tenants' index locks in one order.
        "tenants": sorted(set(tenants)),
    }
    result = await session.execute(_WRITE, params)
    return {(fp, starts_at): bool(inserted) for fp, starts_at, inserted in result.tuples()}
