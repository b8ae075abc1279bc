"""receiver.client against a real receiver (real HTTP, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from receiver.app import create_app
from receiver.client import BreakerClient, breaker_middleware, header
from tests.conftest import API_TOKEN, WEBHOOK_HEADERS, make_settings


def firing(tenant: str) -> dict:
    now = datetime.now(UTC).isoformat()
    return {
        "version": "4",
        "status": "firing",
        "receiver": "breaker",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "TenantErrorRateHigh",
                    "isolate": "true",
                    "tenant_id": tenant,
                },
                "annotations": {},
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
            }
        ],
    }


async def gateway(aiohttp_client, receiver_url: str, **client_options):
    client = BreakerClient(receiver_url, token=API_TOKEN, rng=random.Random(7), **client_options)

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[breaker_middleware(client, tenant_of=header("X-Tenant"))])
    app.router.add_get("/query", handle)
    app.cleanup_ctx.append(client.cleanup_ctx)
    return await aiohttp_client(app)


async def test_gateway_sheds_an_isolated_tenant_and_probes_it_back(
    aiohttp_server, aiohttp_client, clean_db
):
    receiver = await aiohttp_server(
        create_app(
            make_settings(
                clean_db,
                breaker_open_seconds=0.5,
                half_open_probes=5,
                half_open_admit_ratio=0.5,
            )
        )
    )
    base = str(receiver.make_url("/")).rstrip("/")
    gw = await gateway(aiohttp_client, base, cache_seconds=0.05, report_seconds=0.1)

    assert (await gw.get("/query", headers={"X-Tenant": "acme"})).status == 200
    assert (await gw.get("/query")).status == 200  # no tenant: not the breaker's business

    async with aiohttp.ClientSession(base_url=base) as rc:
        resp = await rc.post("/v1/alertmanager", json=firing("acme"), headers=WEBHOOK_HEADERS)
        assert resp.status == 200
    await asyncio.sleep(0.1)  # let the gateway's cache expire
    shed = await gw.get("/query", headers={"X-Tenant": "acme"})
    assert shed.status == 503
    body = await shed.json()
    assert body["error"] == "tenant_isolated" and body["tenant_id"] == "acme"
    assert (await gw.get("/query", headers={"X-Tenant": "other"})).status == 200

    # After the open period the breaker is half-open: about half the requests pass, and
    # their (healthy) outcomes are reported until the receiver closes the breaker.
    deadline = asyncio.get_running_loop().time() + 15
    statuses: list[int] = []
    while asyncio.get_running_loop().time() < deadline:
        r = await gw.get("/query", headers={"X-Tenant": "acme"})
        statuses.append(r.status)
        if statuses[-5:] == [200] * 5 and 503 in statuses:
            break
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession(base_url=base) as rc:
        state = await (
            await rc.get(
                "/v1/tenants/acme/breaker", headers={"Authorization": f"Bearer {API_TOKEN}"}
            )
        ).json()
    assert state["state"] == "closed", statuses
    assert 503 in statuses and 200 in statuses


async def test_receiver_unreachable_fails_open_by_default(aiohttp_client, unused_tcp_port):
    gw = await gateway(aiohttp_client, f"http://127.0.0.1:{unused_tcp_port}")
    assert (await gw.get("/query", headers={"X-Tenant": "acme"})).status == 200


async def test_receiver_unreachable_can_fail_closed(aiohttp_client, unused_tcp_port):
    gw = await gateway(aiohttp_client, f"http://127.0.0.1:{unused_tcp_port}", fail_open=False)
    assert (await gw.get("/query", headers={"X-Tenant": "acme"})).status == 503
