"""Tenant registration and reads."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from receiver import keys
from receiver.http.auth import actor
from receiver.http.breaker_json import breaker_json
from receiver.http.parsing import TENANT, json_response, read_model, tenant_id_from
from receiver.http.schemas import TenantHealthOut, TenantIn, TenantOut
from receiver.service import tenants as tenant_service


async def put_tenant(request: web.Request) -> web.Response:
    tenant_id = tenant_id_from(request)
    body = await read_model(request, TenantIn)
    record = await tenant_service.configure_tenant(
        sessions=request.app[keys.SESSIONS],
        tenant_id=tenant_id,
        tier=body.tier,
        name=body.name,
        hourly_cost=body.hourly_cost,
        admin_email=body.admin_email,
        actor=actor(request, body.actor),
    )
    return json_response(TenantOut(**record.__dict__).model_dump(mode="json"))


async def get_tenant(request: web.Request) -> web.Response:
    record = await tenant_service.get_tenant(
        sessions=request.app[keys.SESSIONS], tenant_id=tenant_id_from(request)
    )
    return json_response(TenantOut(**record.__dict__).model_dump(mode="json"))


async def get_health(request: web.Request) -> web.Response:
    """Breaker (from this replica's view, like the gateways read it), the open incident and
    recent alerts. An unknown tenant is healthy: closed breaker, nothing else."""
    tenant_id = tenant_id_from(request)
    health = await tenant_service.tenant_health(
        sessions=request.app[keys.SESSIONS], tenant_id=tenant_id
    )
    now = datetime.now(UTC)
    view = request.app[keys.VIEW]
    breaker = breaker_json(view.get(tenant_id, now=now), view.policy, view_age_ms=view.age_ms())
    out = TenantHealthOut.of(health, breaker=breaker, now=now)
    return json_response(out.model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    app.router.add_put(f"/v1/tenants/{TENANT}", put_tenant)
    app.router.add_get(f"/v1/tenants/{TENANT}", get_tenant)
    app.router.add_get(f"/v1/tenants/{TENANT}/health", get_health)
