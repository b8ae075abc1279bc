"""Tenants: registration (tier, name, hourly cost, admin e-mail) and health."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from receiver.db import incidents as incident_rows
from receiver.db import tenants as rows
from receiver.db.audit import AuditTrail
from receiver.db.transaction import in_transaction
from receiver.domain.tenant import TenantHealth, TenantRecord
from receiver.errors import NotFound
from receiver.service.incidents.reads import load_record


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
        record = await rows.upsert(
            session,
            tenant_id,
            tier=tier,
            name=name,
            hourly_cost=hourly_cost,
            admin_email=admin_email,
        )
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
        return record

    return await in_transaction(sessions, work, what="tenant configuration")


async def get_tenant(*, sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> TenantRecord:
    async def work(session: AsyncSession) -> TenantRecord:
        record = await rows.get(session, tenant_id)
        if record is None:
            raise NotFound(f"tenant {tenant_id!r} is not known (register it with PUT)")
        return record

    return await in_transaction(sessions, work, what="tenant read")


async def tenant_health(
    *, sessions: async_sessionmaker[AsyncSession], tenant_id: str, alerts: int = 20
) -> TenantHealth:
    """The tenant's registration, its unresolved incident and its latest alerts (the
    breaker comes from the replica's in-memory view, in the handler)."""

    async def work(session: AsyncSession) -> TenantHealth:
        registration = await rows.registration(session, tenant_id)
        member = await incident_rows.unresolved_memberships(session, [tenant_id], lock=False)
        incident = await load_record(session, member[tenant_id]) if member else None
        return TenantHealth(
            tenant_id=tenant_id,
            tenant=registration,
            open_incident=incident,
            recent_alerts=await rows.recent_alerts(session, tenant_id, limit=alerts),
        )

    return await in_transaction(sessions, work, what="tenant health")
