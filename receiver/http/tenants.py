"""Tenant registration and reads."""

from __future__ import annotations

from aiohttp import web

from receiver import app as keys
from receiver.http.parsing import json_response, read_model, tenant_id_from
from receiver.http.schemas import TenantIn
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
        actor=body.actor,
    )
    return json_response(record.to_json())


async def get_tenant(request: web.Request) -> web.Response:
    record = await tenant_service.get_tenant(
        sessions=request.app[keys.SESSIONS], tenant_id=tenant_id_from(request)
    )
    return json_response(record.to_json())


def add_routes(app: web.Application) -> None:
    app.router.add_put("/v1/tenants/{tenant_id}", put_tenant)
    app.router.add_get("/v1/tenants/{tenant_id}", get_tenant)
