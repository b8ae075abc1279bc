"""Tenant registration: tier, name, hourly cost, admin e-mail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db.audit import AuditTrail
from receiver.db.tables import Tenant
from receiver.db.transaction import in_transaction
from receiver.errors import NotFound


@dataclass(frozen=True)
class TenantRecord:
    tenant_id: str
    tier: str | None
    name: str | None
    hourly_cost: float | None
    admin_email: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _record(row: Any) -> TenantRecord:
    cost = row.hourly_cost
    return TenantRecord(
        tenant_id=row.tenant_id,
        tier=row.tier,
        name=row.name,
        hourly_cost=float(cost) if cost is not None else None,
        admin_email=row.admin_email,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def configure_tenant(
    *,
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    tier: str,
    name: str | None,
    hourly_cost: float | None,
    admin_email: str | None,
    actor: str,
) -> TenantRecord:
    async def work(session: AsyncSession) -> TenantRecord:
        values = {
            "tier": tier,
            "name": name,
            "hourly_cost": Decimal(str(hourly_cost)) if hourly_cost is not None else None,
            "admin_email": admin_email,
        }
        insert = pg_insert(Tenant).values(tenant_id=tenant_id, **values)
        upsert = insert.on_conflict_do_update(
            index_elements=[Tenant.tenant_id], set_={**values, "updated_at": func.now()}
        ).returning(Tenant.__table__)
        row = (await session.execute(upsert)).one()
        audit = AuditTrail()
        audit.add(
            "tenant.configured",
            actor=actor,
            tenant_id=tenant_id,
            tier=tier,
            name=name,
            hourly_cost=hourly_cost,
            admin_email=admin_email,
        )
        await audit.flush(session)
        return _record(row)

    return await in_transaction(sessions, work, what="tenant configuration")


async def get_tenant(*, sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> TenantRecord:
    async with sessions() as session:
        row = (
            await session.execute(select(Tenant.__table__).where(Tenant.tenant_id == tenant_id))
        ).one_or_none()
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} is not known (register it with PUT)")
    return _record(row)
