"""Tenant queries: registration, tiers, hourly costs, a tenant's latest alerts."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, any_, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from receiver.db.tables import Alert, AuditLog, Tenant
from receiver.domain.tenant import BoardTenant, RecentAlert, Registration, TenantRecord
from receiver.domain.tiers import Tier


def parse_tier(value: str | None) -> Tier | None:
    """The configured tier, or None for a tenant nobody registered (handled as bronze)."""
    return Tier(value) if value else None


def _cost(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def _record(row: Any) -> TenantRecord:
    return TenantRecord(
        tenant_id=row.tenant_id,
        tier=row.tier,
        name=row.name,
        hourly_cost=_cost(row.hourly_cost),
        admin_email=row.admin_email,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def upsert(
    session: AsyncSession,
    tenant_id: str,
    *,
    tier: str,
    name: str | None,
    hourly_cost: float | None,
    admin_email: str | None,
) -> TenantRecord:
    values = {
        "tier": tier,
        "name": name,
        "hourly_cost": Decimal(str(hourly_cost)) if hourly_cost is not None else None,
        "admin_email": admin_email,
    }
    insert = pg_insert(Tenant).values(tenant_id=tenant_id, **values)
    stmt = insert.on_conflict_do_update(
        index_elements=[Tenant.tenant_id], set_={**values, "updated_at": func.now()}
    ).returning(Tenant.__table__)
    return _record((await session.execute(stmt)).one())


async def get(session: AsyncSession, tenant_id: str) -> TenantRecord | None:
    stmt = select(Tenant.__table__).where(Tenant.tenant_id == tenant_id)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else _record(row)


async def registration(session: AsyncSession, tenant_id: str) -> Registration | None:
    stmt = select(Tenant.tier, Tenant.name, Tenant.hourly_cost, Tenant.admin_email).where(
        Tenant.tenant_id == tenant_id
    )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        return None
    return Registration(
        tier=row.tier,
        name=row.name,
        hourly_cost=_cost(row.hourly_cost),
        admin_email=row.admin_email,
    )


async def tiers(session: AsyncSession, tenants: Iterable[str]) -> dict[str, Tier | None]:
    """Each tenant's tier (None: not registered)."""
    wanted = sorted(set(tenants))
    if not wanted:
        return {}
    # One array parameter, not an IN list of every tenant of a large delivery.
    rows = await session.execute(
        select(Tenant.tenant_id, Tenant.tier).where(
            Tenant.tenant_id == any_(bindparam("wanted", type_=ARRAY(Text)))
        ),
        {"wanted": wanted},
    )
    known = {t: parse_tier(tier) for t, tier in rows.tuples()}
    return {t: known.get(t) for t in wanted}


async def platform_hourly_cost(session: AsyncSession) -> float:
    """What the whole platform down costs per hour: every tenant's hourly cost."""
    total = await session.scalar(select(func.coalesce(func.sum(Tenant.hourly_cost), 0)))
    return float(total or 0)


async def recent_alerts(session: AsyncSession, tenant_id: str, *, limit: int) -> list[RecentAlert]:
    """The tenant's latest alert instances, newest first."""
    rows = await session.execute(
        select(
            Alert.fingerprint,
            Alert.starts_at,
            Alert.ends_at,
            Alert.status,
            Alert.alertname,
            Alert.isolating,
            Alert.annotations,
        )
        .where(Alert.tenant_id == tenant_id)
        .order_by(Alert.starts_at.desc(), Alert.fingerprint)
        .limit(limit)
    )
    return [RecentAlert(**r._mapping) for r in rows]


# The audit actions that change or refuse to change a breaker: the board's "last change".
BREAKER_ACTIONS = ("breaker.transition", "breaker.override", "breaker.suppressed")


async def board(session: AsyncSession) -> list[BoardTenant]:
    """Every known tenant with its registration and its latest breaker change (one indexed
    look into the tenant's audit rows each)."""
    last = (
        select(AuditLog.action, AuditLog.occurred_at, AuditLog.actor, AuditLog.details)
        .where(AuditLog.tenant_id == Tenant.tenant_id, AuditLog.action.in_(BREAKER_ACTIONS))
        .order_by(AuditLog.occurred_at.desc(), AuditLog.id.desc())
        .limit(1)
        .lateral("last_change")
    )
    rows = await session.execute(
        select(Tenant.tenant_id, Tenant.tier, Tenant.name, last)
        .outerjoin(last, true())
        .order_by(Tenant.tenant_id)
    )
    return [
        BoardTenant(
            tenant_id=r.tenant_id,
            tier=r.tier,
            name=r.name,
            last_action=r.action,
            last_at=r.occurred_at,
            last_actor=r.actor,
            last_reason=(r.details or {}).get("reason"),
        )
        for r in rows
    ]
