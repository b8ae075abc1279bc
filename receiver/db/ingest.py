"""The statements of webhook deliveries written together: their ids and stale check, then
their alerts, delivery rows and tenants, each in one round trip whatever the deliveries'
sizes and number; the same without a delivery for the reconciler; and the superseding of
older instances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.json import dumps
from receiver.db.transaction import remember_now
from receiver.domain.alerts import AlertInstance, AlertRole, AlertStatus

# Deliveries are written in three round trips whatever their size and number:
# `begin_deliveries` (ids and the stale check), `write_deliveries` (alerts, the deliveries
# with their counts, tenants) and the audit rows (AuditTrail.flush); a fourth,
# `supersede`, only when an older instance of an arriving fingerprint is still firing
# (begin_deliveries tells). Each is one
# constant statement over arrays, so SQLAlchemy caches it and psycopg prepares it once
# per connection. bench/README.md has the measurements that led here (one ORM statement
# per table, built per delivery, was about three times the CPU per delivery).
#
# Per fingerprint: the newest recorded starts_at (the stale check) and the oldest one
# still firing (is there anything for a newer instance to supersede?).
_KNOWN = """
    SELECT fingerprint, max(starts_at) AS newest,
           min(starts_at) FILTER (WHERE status = 'firing') AS oldest_firing
    FROM alerts
    WHERE fingerprint = ANY(CAST(:fingerprints AS text[]))
    GROUP BY fingerprint
"""
_BEGIN = text(
    f"""
    SELECT n.ids, s.fingerprint, s.newest, s.oldest_firing, n.now
    FROM (
        SELECT ARRAY(
                   SELECT nextval(pg_get_serial_sequence('deliveries', 'id'))
                   FROM generate_series(1, CAST(:count AS integer))
               ) AS ids,
               statement_timestamp() AS now
    ) AS n
    LEFT JOIN ({_KNOWN}) AS s ON true
    """
)
_KNOWN_ONLY = text(_KNOWN)
# The delivery row is inserted after its alerts in the same statement, so that it carries
# their counts; the foreign key is checked at the end of the statement, when it is there.
# A firing row is turned resolved, never the other way; xmax is 0 on a row this statement
# inserted, non-zero on one it updated. Every tenant that ever alerted is known: the
# mass-isolation guard counts them.
_ALERTS_CTE = """
    a AS (
        INSERT INTO alerts (fingerprint, starts_at, ends_at, status, tenant_id, alertname,
                            labels, annotations, generator_url, isolating, platform,
                            delivery_id, resolved_seen_at)
        SELECT r.fingerprint, r.starts_at, r.ends_at, r.status, r.tenant_id, r.alertname,
               r.labels::jsonb, r.annotations::jsonb, r.generator_url, r.isolating,
               r.platform, r.delivery_id, r.resolved_seen_at
        FROM unnest(
            CAST(:fingerprint AS text[]), CAST(:starts_at AS timestamptz[]),
            CAST(:ends_at AS timestamptz[]), CAST(:status AS text[]),
            CAST(:tenant_id AS text[]), CAST(:alertname AS text[]), CAST(:labels AS text[]),
            CAST(:annotations AS text[]), CAST(:generator_url AS text[]),
            CAST(:isolating AS boolean[]), CAST(:platform AS boolean[]),
            CAST(:alert_delivery_id AS bigint[]), CAST(:resolved_seen_at AS timestamptz[])
        ) AS r(fingerprint, starts_at, ends_at, status, tenant_id, alertname, labels,
               annotations, generator_url, isolating, platform, delivery_id,
               resolved_seen_at)
        ON CONFLICT (fingerprint, starts_at) DO UPDATE
        SET status = excluded.status, ends_at = excluded.ends_at,
            annotations = excluded.annotations, resolved_seen_at = excluded.resolved_seen_at
        WHERE alerts.status = 'firing' AND excluded.status = 'resolved'
        RETURNING alerts.fingerprint, alerts.starts_at, (alerts.xmax = 0) AS inserted
    ), t AS (
        INSERT INTO tenants (tenant_id)
        SELECT unnest(CAST(:tenants AS text[]))
        ON CONFLICT (tenant_id) DO NOTHING
    )
"""
# Several deliveries at once (group commit): an instance belongs to exactly one of them
# (service/ingest.py writes deliveries that share a fingerprint in separate statements),
# so joining the changed rows back to the arrays gives each delivery its counts.
_WRITE = text(
    f"""
    WITH {_ALERTS_CTE}, counts AS (
        SELECT r.delivery_id,
               count(*) FILTER (WHERE a.inserted) AS new_alerts,
               count(*) FILTER (WHERE NOT a.inserted) AS changed_alerts
        FROM a
        JOIN unnest(CAST(:fingerprint AS text[]), CAST(:starts_at AS timestamptz[]),
                    CAST(:alert_delivery_id AS bigint[])) AS r(fingerprint, starts_at,
                                                                delivery_id)
          ON r.fingerprint = a.fingerprint AND r.starts_at = a.starts_at
        GROUP BY r.delivery_id
    ), d AS (
        INSERT INTO deliveries (id, receiver, status, group_key, group_labels, external_url,
                                alert_count, truncated_alerts, new_alerts, changed_alerts)
        SELECT v.id, v.receiver, v.status, v.group_key, v.group_labels::jsonb,
               v.external_url, v.alert_count, v.truncated_alerts,
               coalesce(c.new_alerts, 0), coalesce(c.changed_alerts, 0)
        FROM unnest(
            CAST(:d_id AS bigint[]), CAST(:d_receiver AS text[]), CAST(:d_status AS text[]),
            CAST(:d_group_key AS text[]), CAST(:d_group_labels AS text[]),
            CAST(:d_external_url AS text[]), CAST(:d_alert_count AS integer[]),
            CAST(:d_truncated_alerts AS integer[])
        ) AS v(id, receiver, status, group_key, group_labels, external_url, alert_count,
               truncated_alerts)
        LEFT JOIN counts c ON c.delivery_id = v.id
    )
    SELECT fingerprint, starts_at, inserted FROM a
    """
)
# The reconciler's: the same alerts and tenants, no delivery (delivery_id NULL).
_WRITE_ALERTS = text(f"WITH {_ALERTS_CTE} SELECT fingerprint, starts_at, inserted FROM a")
# Superseded instances (DESIGN.md "The truth from Alertmanager"): Alertmanager holds one
# alert per fingerprint, so an instance older than one that arrived is over, whether or
# not its resolved was ever delivered. It ended at the latest when the newer one started.
# Rows are locked in key order, as the upsert locks them.
_SUPERSEDE = text(
    """
    WITH s AS (
        SELECT fingerprint, max(starts_at) AS by
        FROM unnest(CAST(:fingerprint AS text[]), CAST(:starts_at AS timestamptz[]))
             AS n(fingerprint, starts_at)
        GROUP BY fingerprint
    ), old AS (
        SELECT a.fingerprint, a.starts_at, s.by
        FROM alerts a JOIN s ON a.fingerprint = s.fingerprint
        WHERE a.status = 'firing' AND a.starts_at < s.by
        ORDER BY a.fingerprint, a.starts_at
        FOR UPDATE OF a
    )
    UPDATE alerts SET status = 'resolved', ends_at = LEAST(old.by, :now),
                      resolved_seen_at = :now
    FROM old
    WHERE alerts.fingerprint = old.fingerprint AND alerts.starts_at = old.starts_at
      AND alerts.status = 'firing'
    RETURNING alerts.fingerprint, alerts.starts_at, alerts.ends_at, alerts.tenant_id,
              alerts.labels, alerts.annotations, alerts.generator_url, alerts.isolating,
              alerts.platform, old.by
    """
)


@dataclass(frozen=True)
class Known:
    """What is recorded of some fingerprints: the newest starts_at of each, and the
    oldest one still firing (absent: none firing)."""

    newest: dict[str, datetime] = field(default_factory=dict)
    oldest_firing: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Superseded:
    instance: AlertInstance  # RESOLVED, ends_at set
    by: datetime  # startsAt of the newer instance


def _known(rows: Sequence[Any]) -> Known:
    known = Known()
    for fp, newest, oldest_firing in rows:
        if fp is None:
            continue
        known.newest[fp] = newest
        if oldest_firing is not None:
            known.oldest_firing[fp] = oldest_firing
    return known


async def begin_deliveries(
    session: AsyncSession, count: int, fingerprints: Sequence[str]
) -> tuple[list[int], Known]:
    """`count` new delivery ids, and what is recorded of `fingerprints`. The statement
    also reads the database's clock for the transaction (db.transaction.database_now),
    after the guard lock: no extra round trip on the webhook's path."""
    params = {"count": count, "fingerprints": sorted(set(fingerprints))}
    rows = (await session.execute(_BEGIN, params)).all()
    remember_now(session, rows[0][4])
    return [int(i) for i in rows[0][0]], _known([r[1:4] for r in rows])


async def known_instances(session: AsyncSession, fingerprints: Sequence[str]) -> Known:
    """What is recorded of `fingerprints` (the reconciler's begin: no delivery)."""
    if not fingerprints:
        return Known()
    params = {"fingerprints": sorted(set(fingerprints))}
    return _known((await session.execute(_KNOWN_ONLY, params)).all())


def _alert_params(
    alerts: Sequence[AlertInstance],
    *,
    delivery_ids: Sequence[int | None],
    tenants: Sequence[str],
    now: datetime,
) -> dict[str, Any]:
    resolved = [a.status is AlertStatus.RESOLVED for a in alerts]
    return {
        "alert_delivery_id": list(delivery_ids),
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
        # Sorted: concurrent deliveries take the tenants' index locks in one order.
        "tenants": sorted(set(tenants)),
    }


@dataclass(frozen=True)
class DeliveryRow:
    """One webhook delivery's own columns (its counts come from its alerts)."""

    id: int
    receiver: str
    status: str
    group_key: str
    group_labels: Mapping[str, str]
    external_url: str
    alert_count: int
    truncated_alerts: int


async def write_deliveries(
    session: AsyncSession,
    alerts: Sequence[AlertInstance],
    *,
    delivery_ids: Sequence[int],
    deliveries: Sequence[DeliveryRow],
    tenants: Sequence[str],
    now: datetime,
) -> dict[tuple[str, datetime], bool]:
    """Insert new instances (each of the delivery at the same place in `delivery_ids`;
    an instance key appears once), turn firing ones resolved (never resolved back to
    firing), record the deliveries and register `tenants`. A resolved instance without
    an end ends `now`.

    Returns the instances that changed, each with True when it was inserted. PostgreSQL
    decides each row atomically, so of two concurrent copies exactly one sees the change."""
    params = _alert_params(alerts, delivery_ids=delivery_ids, tenants=tenants, now=now)
    params.update(
        d_id=[d.id for d in deliveries],
        d_receiver=[d.receiver for d in deliveries],
        d_status=[d.status for d in deliveries],
        d_group_key=[d.group_key for d in deliveries],
        d_group_labels=[dumps(d.group_labels) for d in deliveries],
        d_external_url=[d.external_url for d in deliveries],
        d_alert_count=[d.alert_count for d in deliveries],
        d_truncated_alerts=[d.truncated_alerts for d in deliveries],
    )
    result = await session.execute(_WRITE, params)
    return {(fp, starts_at): bool(inserted) for fp, starts_at, inserted in result.tuples()}


async def write_alerts(
    session: AsyncSession,
    alerts: Sequence[AlertInstance],
    *,
    tenants: Sequence[str],
    now: datetime,
) -> dict[tuple[str, datetime], bool]:
    """As write_deliveries, without a delivery (the reconciler's instances)."""
    if not alerts and not tenants:
        return {}
    params = _alert_params(alerts, delivery_ids=[None] * len(alerts), tenants=tenants, now=now)
    result = await session.execute(_WRITE_ALERTS, params)
    return {(fp, starts_at): bool(inserted) for fp, starts_at, inserted in result.tuples()}


async def supersede(
    session: AsyncSession, arrived: Sequence[tuple[str, datetime]], *, now: datetime
) -> list[Superseded]:
    """Resolve every stored firing instance older than an arrived instance of its
    fingerprint; returns them, resolved, in key order."""
    if not arrived:
        return []
    params = {
        "fingerprint": [fp for fp, _ in arrived],
        "starts_at": [starts_at for _, starts_at in arrived],
        "now": now,
    }
    rows = (await session.execute(_SUPERSEDE, params)).all()
    out = [
        Superseded(
            instance=AlertInstance(
                fingerprint=fp,
                starts_at=starts_at,
                ends_at=ends_at,
                status=AlertStatus.RESOLVED,
                labels=labels,
                annotations=annotations,
                generator_url=generator_url,
                role=stored_role(isolating=isolating, platform=platform, tenant_id=tenant_id),
                tenant_id=tenant_id,
            ),
            by=by,
        )
        for (
            fp,
            starts_at,
            ends_at,
            tenant_id,
            labels,
            annotations,
            generator_url,
            isolating,
            platform,
            by,
        ) in rows
    ]
    return sorted(out, key=lambda s: s.instance.key)


def stored_role(*, isolating: bool, platform: bool, tenant_id: str | None) -> AlertRole:
    """The role a stored row was recorded with (its flags and tenant column)."""
    if platform:
        return AlertRole.PLATFORM
    if isolating:
        return AlertRole.ISOLATING
    return AlertRole.TENANT if tenant_id else AlertRole.OTHER
