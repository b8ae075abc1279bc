"""Incident queries: incidents, their member tenants and linked alerts, the day counter,
the incident's audit record.

Locks: incident rows are taken FOR NO KEY UPDATE (`key_share=True` here) before they
change; opening and joining run under the advisory lock INCIDENT_LOCK."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Select,
    Text,
    and_,
    any_,
    bindparam,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import (
    Alert,
    AuditLog,
    Breaker,
    HeartbeatState,
    Incident,
    IncidentAlert,
    IncidentCounter,
    IncidentTenant,
    Tenant,
)
from receiver.db.tenants import parse_tier
from receiver.domain.breaker import BreakerState
from receiver.domain.incident import IncidentRecord, IncidentStatus
from receiver.domain.incident_detail import LinkedAlert
from receiver.domain.isolation import AuditEntry
from receiver.domain.members import Member
from receiver.domain.tiers import Priority

# Opening and joining incidents is decided one delivery at a time across all replicas.
INCIDENT_LOCK = 7262023

AlertKey = tuple[str, datetime]  # (fingerprint, startsAt): one alert instance
_UNRESOLVED = Incident.status != IncidentStatus.RESOLVED.value

# Lists of tenants and alert instances travel as array parameters, one per column: a
# delivery of 10,000 alerts would otherwise build (and psycopg convert) an IN list or a
# multi-row VALUES of 10,000 entries per statement, seconds of CPU under the guard lock.
_ADD_MEMBERS = text(
    """
    INSERT INTO incident_tenants (incident_id, tenant_id, joined_at, cause)
    SELECT :incident_id, t.tenant_id, :joined_at, t.cause
    FROM unnest(CAST(:tenants AS text[]), CAST(:causes AS text[])) AS t(tenant_id, cause)
    ON CONFLICT DO NOTHING
    """
)
_LINK_ALERTS = text(
    """
    INSERT INTO incident_alerts (incident_id, fingerprint, starts_at, linked_at)
    SELECT :incident_id, k.fingerprint, k.starts_at, :linked_at
    FROM unnest(CAST(:fingerprints AS text[]), CAST(:starts_at AS timestamptz[]))
         AS k(fingerprint, starts_at)
    ON CONFLICT DO NOTHING
    RETURNING fingerprint, starts_at
    """
)
_ALERT_NAMES = text(
    """
    SELECT a.fingerprint, a.starts_at, a.alertname, a.tenant_id
    FROM unnest(CAST(:fingerprints AS text[]), CAST(:starts_at AS timestamptz[]))
         AS k(fingerprint, starts_at)
    JOIN alerts AS a ON a.fingerprint = k.fingerprint AND a.starts_at = k.starts_at
    """
)


def _texts(name: str) -> Any:
    return bindparam(name, type_=ARRAY(Text))


def _key_arrays(keys: Iterable[AlertKey]) -> dict[str, list[Any]]:
    keys = list(keys)
    return {"fingerprints": [fp for fp, _ in keys], "starts_at": [s for _, s in keys]}


def _record(row: Any, tenants: Sequence[str] = ()) -> IncidentRecord:
    return IncidentRecord(
        id=row.id,
        title=row.title,
        priority=Priority(row.priority),
        status=IncidentStatus(row.status),
        opened_at=row.opened_at,
        ack_due_at=row.ack_due_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        sla_breached_at=row.sla_breached_at,
        tenants=tuple(tenants),
    )


async def _records(session: AsyncSession, stmt: Select[Any]) -> list[IncidentRecord]:
    return [_record(row) for row in await session.execute(stmt)]


def _incidents() -> Select[Any]:
    return select(Incident.__table__)


def _linked() -> Any:
    """Join condition: the alert instance of an incident_alerts row."""
    return and_(
        Alert.fingerprint == IncidentAlert.fingerprint,
        Alert.starts_at == IncidentAlert.starts_at,
    )


# --- incidents -------------------------------------------------------------------------


async def get(
    session: AsyncSession, incident_id: str, *, lock: bool = False
) -> IncidentRecord | None:
    """The incident (without its tenants), locked for a change with `lock`."""
    stmt = _incidents().where(Incident.id == incident_id)
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else _record(row)


async def take_open_lock(session: AsyncSession) -> None:
    """The transaction lock under which incidents are opened and joined."""
    await session.execute(select(func.pg_advisory_xact_lock(INCIDENT_LOCK)))


async def lock_opened_since(session: AsyncSession, since: datetime) -> list[IncidentRecord]:
    """Unresolved incidents opened after `since`, newest first, locked; never the
    heartbeat's "pipeline silent" incident (failing tenants do not join it)."""
    heartbeat = select(HeartbeatState.incident_id).where(HeartbeatState.incident_id.is_not(None))
    return await _records(
        session,
        _incidents()
        .where(_UNRESOLVED, Incident.opened_at > since, Incident.id.not_in(heartbeat))
        .order_by(Incident.opened_at.desc(), Incident.id.desc())
        .with_for_update(key_share=True),
    )


async def lock_unresolved(session: AsyncSession, ids: Iterable[str]) -> list[IncidentRecord]:
    """These incidents that are not resolved, in id order, locked."""
    return await _records(
        session,
        _incidents()
        .where(Incident.id.in_(sorted(set(ids))), _UNRESOLVED)
        .order_by(Incident.id)
        .with_for_update(key_share=True),
    )


async def lock_overdue(session: AsyncSession, *, now: datetime, limit: int) -> list[IncidentRecord]:
    """Open incidents past their due time not yet flagged, oldest due first. SKIP LOCKED:
    replicas checking at once each take different ones, and one being acknowledged right
    now is left to that transaction."""
    return await _records(
        session,
        _incidents()
        .where(
            Incident.status == IncidentStatus.OPEN.value,
            Incident.sla_breached_at.is_(None),
            Incident.ack_due_at <= now,
        )
        .order_by(Incident.ack_due_at, Incident.id)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True),
    )


async def next_seq(session: AsyncSession, day: date) -> int:
    """The next number of the (UTC) day; the upsert's row lock makes it unique however
    many replicas open incidents at once."""
    upsert = pg_insert(IncidentCounter).values(day=day, last=1)
    stmt = upsert.on_conflict_do_update(
        index_elements=[IncidentCounter.day], set_={"last": IncidentCounter.last + 1}
    ).returning(IncidentCounter.last)
    return int((await session.execute(stmt)).scalar_one())


async def insert_incident(
    session: AsyncSession,
    *,
    incident_id: str,
    title: str,
    priority: Priority,
    opened_at: datetime,
    ack_due_at: datetime,
) -> None:
    await session.execute(
        insert(Incident).values(
            id=incident_id,
            title=title,
            priority=priority.value,
            status=IncidentStatus.OPEN.value,
            opened_at=opened_at,
            ack_due_at=ack_due_at,
        )
    )


async def set_priority(
    session: AsyncSession, incident_id: str, *, priority: Priority, ack_due_at: datetime
) -> None:
    await session.execute(
        update(Incident)
        .where(Incident.id == incident_id)
        .values(priority=priority.value, ack_due_at=ack_due_at, updated_at=func.now())
    )


async def set_status(
    session: AsyncSession, incident_id: str, *, status: IncidentStatus, actor: str, at: datetime
) -> None:
    """Move to acknowledged or resolved, recording who did it and when."""
    if status is IncidentStatus.ACKNOWLEDGED:
        who = {"acknowledged_at": at, "acknowledged_by": actor}
    elif status is IncidentStatus.RESOLVED:
        who = {"resolved_at": at, "resolved_by": actor}
    else:
        raise ValueError(f"an incident never moves back to {status}")
    await session.execute(
        update(Incident)
        .where(Incident.id == incident_id)
        .values(status=status.value, updated_at=func.now(), **who)
    )


async def mark_sla_breached(session: AsyncSession, ids: Sequence[str], *, now: datetime) -> None:
    await session.execute(
        update(Incident)
        .where(Incident.id.in_(list(ids)))
        .values(sla_breached_at=now, updated_at=func.now())
    )


async def search(
    session: AsyncSession,
    *,
    status: IncidentStatus | None,
    priority: Priority | None,
    tenant_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[IncidentRecord]:
    """Newest first, with their tenants; `since`/`until` bound opened_at ([since, until))."""
    stmt = _incidents().order_by(Incident.opened_at.desc(), Incident.id.desc())
    if status is not None:
        stmt = stmt.where(Incident.status == status.value)
    if priority is not None:
        stmt = stmt.where(Incident.priority == priority.value)
    if tenant_id is not None:
        of_tenant = select(IncidentTenant.incident_id).where(IncidentTenant.tenant_id == tenant_id)
        stmt = stmt.where(Incident.id.in_(of_tenant))
    if since is not None:
        stmt = stmt.where(Incident.opened_at >= since)
    if until is not None:
        stmt = stmt.where(Incident.opened_at < until)
    records = await _records(session, stmt.limit(limit))
    tenants = await tenant_lists(session, [r.id for r in records])
    return [r.with_tenants(tenants.get(r.id, [])) for r in records]


# --- member tenants --------------------------------------------------------------------


async def unresolved_memberships(
    session: AsyncSession, tenants: Iterable[str], *, lock: bool
) -> dict[str, str]:
    """tenant -> its unresolved incident (a tenant is in at most one at a time)."""
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    stmt = (
        select(IncidentTenant.tenant_id, Incident.id)
        .join(Incident, Incident.id == IncidentTenant.incident_id)
        .where(IncidentTenant.tenant_id == any_(_texts("tenants")), _UNRESOLVED)
        .order_by(Incident.opened_at, Incident.id)
    )
    if lock:
        stmt = stmt.with_for_update(of=Incident, key_share=True)
    rows = await session.execute(stmt, {"tenants": wanted})
    # Newest wins should two ever exist (they cannot under the incident lock).
    return dict(rows.tuples().all())


async def add_members(
    session: AsyncSession, incident_id: str, causes: dict[str, str], *, joined_at: datetime
) -> None:
    """Add tenants (tenant -> cause); one already a member stays as it was."""
    if not causes:
        return
    await session.execute(
        _ADD_MEMBERS,
        {
            "incident_id": incident_id,
            "tenants": list(causes),
            "causes": list(causes.values()),
            "joined_at": joined_at,
        },
    )


async def members(session: AsyncSession, incident_id: str) -> list[Member]:
    """The incident's tenants in joining order, with registration and breaker."""
    rows = await session.execute(
        select(
            IncidentTenant.tenant_id,
            IncidentTenant.cause,
            IncidentTenant.joined_at,
            Tenant.tier,
            Tenant.name,
            Tenant.hourly_cost,
            Tenant.admin_email,
            Breaker.state,
            Breaker.alert_firing,
        )
        .join(Tenant, Tenant.tenant_id == IncidentTenant.tenant_id)
        .outerjoin(Breaker, Breaker.tenant_id == IncidentTenant.tenant_id)
        .where(IncidentTenant.incident_id == incident_id)
        .order_by(IncidentTenant.joined_at, IncidentTenant.tenant_id)
    )
    return [
        Member(
            tenant_id=r.tenant_id,
            cause=r.cause,
            joined_at=r.joined_at,
            tier=parse_tier(r.tier),
            name=r.name,
            hourly_cost=float(r.hourly_cost) if r.hourly_cost is not None else None,
            admin_email=r.admin_email,
            breaker_state=BreakerState(r.state or BreakerState.CLOSED.value),
            alert_firing=bool(r.alert_firing),
        )
        for r in rows
    ]


async def tenant_lists(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[str]]:
    """incident -> its tenants in joining order."""
    if not ids:
        return {}
    rows = await session.execute(
        select(IncidentTenant.incident_id, IncidentTenant.tenant_id)
        .where(IncidentTenant.incident_id.in_(list(ids)))
        .order_by(IncidentTenant.joined_at, IncidentTenant.tenant_id)
    )
    out: dict[str, list[str]] = {}
    for incident_id, tenant in rows.tuples():
        out.setdefault(incident_id, []).append(tenant)
    return out


# --- linked alerts ---------------------------------------------------------------------


async def unresolved_links(session: AsyncSession, keys: Sequence[AlertKey]) -> dict[AlertKey, str]:
    """Alert instance -> unresolved incident it is linked to."""
    if not keys:
        return {}
    rows = await session.execute(
        select(IncidentAlert.fingerprint, IncidentAlert.starts_at, Incident.id)
        .join(Incident, Incident.id == IncidentAlert.incident_id)
        .where(
            tuple_(IncidentAlert.fingerprint, IncidentAlert.starts_at).in_(list(keys)),
            _UNRESOLVED,
        )
    )
    return {(fp, s): i for fp, s, i in rows.tuples()}


async def lock_unresolved_platform_links(
    session: AsyncSession, fingerprints: Iterable[str]
) -> dict[str, str]:
    """Platform alert fingerprint -> the unresolved incident an instance of it is in."""
    wanted = sorted(set(fingerprints))
    if not wanted:
        return {}
    rows = await session.execute(
        select(IncidentAlert.fingerprint, Incident.id)
        .join(Incident, Incident.id == IncidentAlert.incident_id)
        .where(IncidentAlert.fingerprint.in_(wanted), _UNRESOLVED)
        .order_by(Incident.opened_at, Incident.id)
        .with_for_update(of=Incident, key_share=True)
    )
    return dict(rows.tuples().all())


async def link_alerts(
    session: AsyncSession, incident_id: str, keys: Iterable[AlertKey], *, linked_at: datetime
) -> list[AlertKey]:
    """Link alert instances; returns those that were not linked before."""
    ordered = sorted(set(keys))
    if not ordered:
        return []
    result = await session.execute(
        _LINK_ALERTS,
        {"incident_id": incident_id, **_key_arrays(ordered), "linked_at": linked_at},
    )
    return list(result.tuples())


async def alert_names(
    session: AsyncSession, keys: Sequence[AlertKey]
) -> list[tuple[str, datetime, str, str | None]]:
    """(fingerprint, startsAt, alertname, tenant) of these alert instances."""
    if not keys:
        return []
    rows = await session.execute(_ALERT_NAMES, _key_arrays(keys))
    return list(rows.tuples())


async def firing_alert_keys(session: AsyncSession, tenants: Sequence[str]) -> list[AlertKey]:
    """The firing alert instances of these tenants."""
    rows = await session.execute(
        select(Alert.fingerprint, Alert.starts_at).where(
            Alert.tenant_id == any_(_texts("tenants")), Alert.status == "firing"
        ),
        {"tenants": sorted(set(tenants))},
    )
    # Plain tuples: link_alerts sorts them, and Row's comparisons cost ten times more.
    return [(fp, starts_at) for fp, starts_at in rows.tuples()]


async def firing_alertnames(session: AsyncSession, tenants: Iterable[str]) -> list[str]:
    """The distinct names of these tenants' firing alerts, sorted."""
    rows = await session.execute(
        select(Alert.alertname)
        .where(Alert.tenant_id == any_(_texts("tenants")), Alert.status == "firing")
        .distinct()
        .order_by(Alert.alertname),
        {"tenants": sorted(set(tenants))},
    )
    return [n for (n,) in rows.tuples() if n]


async def has_platform_alert(
    session: AsyncSession, incident_id: str, *, firing: bool = False
) -> bool:
    """Whether a platform alert (a firing one, with `firing`) is linked to the incident."""
    stmt = (
        select(func.count())
        .select_from(IncidentAlert)
        .join(Alert, _linked())
        .where(IncidentAlert.incident_id == incident_id, Alert.platform)
    )
    if firing:
        stmt = stmt.where(Alert.status == "firing")
    return bool(await session.scalar(stmt))


async def runbook_urls(session: AsyncSession, incident_id: str) -> list[str]:
    """The distinct runbook_url annotations of the linked alerts, oldest alert first."""
    rows = await session.execute(
        select(Alert.annotations["runbook_url"].astext)
        .join(IncidentAlert, _linked())
        .where(IncidentAlert.incident_id == incident_id)
        .order_by(Alert.starts_at, Alert.fingerprint)
    )
    return list(dict.fromkeys(u for (u,) in rows.tuples() if u))


async def linked_alerts(session: AsyncSession, incident_id: str) -> list[LinkedAlert]:
    rows = await session.execute(
        select(
            Alert.fingerprint,
            Alert.starts_at,
            Alert.ends_at,
            Alert.status,
            Alert.alertname,
            Alert.tenant_id,
            Alert.platform,
            Alert.isolating,
            Alert.labels,
            Alert.annotations,
            Alert.generator_url,
            IncidentAlert.linked_at,
        )
        .join(IncidentAlert, _linked())
        .where(IncidentAlert.incident_id == incident_id)
        .order_by(Alert.starts_at, Alert.fingerprint)
    )
    return [LinkedAlert(**r._mapping) for r in rows]


# --- the incident's audit record -------------------------------------------------------


async def timeline(session: AsyncSession, incident_id: str) -> list[AuditEntry]:
    """The incident's audit rows, oldest first."""
    rows = await session.execute(
        select(
            AuditLog.id,
            AuditLog.occurred_at,
            AuditLog.actor,
            AuditLog.action,
            AuditLog.tenant_id,
            AuditLog.details,
        )
        .where(AuditLog.incident_id == incident_id)
        .order_by(AuditLog.occurred_at, AuditLog.id)
    )
    return [AuditEntry(**r._mapping) for r in rows]
