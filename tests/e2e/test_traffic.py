"""The demo traffic generator, in process and fast (not marked e2e): the end-to-end test
and `make demo` rely on it to count only what the platform served, shed isolated tenants
through receiver.client, report half-open probe outcomes and register the tenants' tiers.
A small fake receiver stands in for the real one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from demo.traffic import TRAFFIC, TenantSpec, TenantState, TrafficSettings, create_app
from demo.traffic import parse_tenants as parse


def test_default_tenants_one_gold_and_the_last_one_noisy() -> None:
    tenants = parse("6")
    assert [t.tenant_id for t in tenants] == [f"tenant-{i}" for i in range(1, 7)]
    assert [t.tier for t in tenants] == ["gold", "silver", "bronze", "silver", "bronze", "silver"]
    assert [t.error_ratio for t in tenants] == [0, 0, 0, 0, 0, 0.15]
    assert parse("1") == [TenantSpec("tenant-1", "gold")]


def test_tenant_lists() -> None:
    assert parse("acme:gold, globex:silver:0.2,initech") == [
        TenantSpec("acme", "gold"),
        TenantSpec("globex", "silver", 0.2),
        TenantSpec("initech", "silver"),
    ]


@pytest.mark.parametrize("spec", ["0", "a:b:c:d", "a:diamond", "a:gold:2", "a,a", ":gold", ""])
def test_bad_tenant_lists(spec: str) -> None:
    with pytest.raises(ValueError):
        parse(spec)


@pytest.mark.parametrize("ratio", [0.0, 0.15, 0.5, 1.0])
def test_failures_are_exact_and_evenly_spread(ratio: float) -> None:
    tenant = TenantState(TenantSpec("t", "gold"), ratio)
    outcomes = [tenant.next_query_fails() for _ in range(3000)]
    assert sum(outcomes) == round(3000 * ratio)
    # Any 150 queries in a row (30 s at 5 req/s, one rate window) hold the ratio to 1 query.
    worst = max(sum(outcomes[i : i + 150]) for i in range(len(outcomes) - 150))
    assert worst <= 150 * ratio + 1


class FakeReceiver:
    """GET breaker, POST outcomes and PUT tenant, with a breaker state the test sets."""

    ADMIT = {"closed": 1.0, "open": 0.0, "half_open": 1.0}

    def __init__(self) -> None:
        self.state = "closed"
        self.outcomes: list[dict[str, Any]] = []
        self.tenants: dict[str, str] = {}
        self.app = web.Application()
        self.app.router.add_get("/v1/tenants/{t}/breaker", self.breaker)
        self.app.router.add_post("/v1/tenants/{t}/outcomes", self.record)
        self.app.router.add_put("/v1/tenants/{t}", self.register)

    async def breaker(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer api-token"
        return web.json_response(
            {
                "tenant_id": request.match_info["t"],
                "state": self.state,
                "allow": self.state != "open",
                "admit_ratio": self.ADMIT[self.state],
            }
        )

    async def record(self, request: web.Request) -> web.Response:
        self.outcomes.append(await request.json())
        return await self.breaker(request)

    async def register(self, request: web.Request) -> web.Response:
        self.tenants[request.match_info["t"]] = (await request.json())["tier"]
        return web.json_response({})


def sample(text: str, name: str, tenant: str) -> float:
    prefix = f'{name}{{tenant_id="{tenant}"}} '
    (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
    return float(line.removeprefix(prefix))


async def test_the_gateway_counts_only_what_the_platform_served(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    fake = FakeReceiver()
    server = await aiohttp_server(fake.app)
    settings = TrafficSettings(
        receiver_url=str(server.make_url("")),
        api_token="api-token",
        tenants="a:gold,b:bronze:0.5",
        breaker_cache_seconds=0.001,
    )
    app = create_app(settings, drive=False)
    client = await aiohttp_client(app)

    async def query(tenant: str) -> int:
        await asyncio.sleep(0.01)  # past the breaker client's cache
        r = await client.post("/gateway/query", headers={"X-Tenant-Id": tenant})
        return int(r.status)

    async def counters(tenant: str) -> tuple[float, float]:
        text = await (await client.get("/metrics")).text()
        return (
            sample(text, "rag_queries_total", tenant),
            sample(text, "rag_queries_errors_total", tenant),
        )

    # Every series exists from the start, at 0.
    assert await counters("a") == (0, 0)
    assert await counters("b") == (0, 0)
    for _ in range(50):
        if (await (await client.get("/healthz")).json())["registered"]:
            break
        await asyncio.sleep(0.05)
    assert fake.tenants == {"a": "gold", "b": "bronze"}

    assert await query("a") == 200
    assert (await client.post("/tenants/a/fail")).status == 200
    assert await query("a") == 500
    assert await counters("a") == (2, 1)
    assert [await query("b") for _ in range(4)] == [200, 500, 200, 500]  # exactly 50 %

    fake.state = "open"  # shed before the platform: neither counter moves
    r = await client.post("/gateway/query", headers={"X-Tenant-Id": "a"})
    await asyncio.sleep(0.01)
    r = await client.post("/gateway/query", headers={"X-Tenant-Id": "a"})
    assert r.status == 503
    assert (await r.json())["error"] == "tenant_isolated"
    assert await counters("a") == (2, 1)

    fake.state = "half_open"  # probes pass, are counted, and their outcomes reported
    assert await query("a") == 500
    assert (await client.post("/tenants/a/recover")).status == 200
    assert await query("a") == 200
    assert await counters("a") == (4, 2)
    await app[TRAFFIC].client.flush()
    assert fake.outcomes == [{"success": 1, "failure": 1}]

    tenants = {t["tenant_id"]: t for t in (await (await client.get("/tenants")).json())["tenants"]}
    assert (tenants["a"]["mode"], tenants["b"]["mode"]) == ("healthy", "noisy")
    assert (await client.post("/tenants/zz/fail")).status == 404
    assert (await client.post("/tenants/a/fail", json={"error_ratio": 7})).status == 422


def test_a_bursty_tenant_bursts_to_35_percent_for_7_of_every_20_seconds() -> None:
    (spec,) = parse("b:silver:bursty")
    assert spec.bursts is not None and spec.error_ratio == 0.05
    ratios = [spec.bursts.ratio_at(t / 10) for t in range(400)]  # 40 s, every 0.1 s
    assert ratios.count(0.35) == 140 and ratios.count(0.05) == 260
    tenant = TenantState(spec, spec.error_ratio)
    assert tenant.mode == "bursty"
    tenant.failing_since = datetime.now(UTC)
    tenant.error_ratio = 0.9
    assert tenant.current_ratio() == 0.9  # a failure overrides the bursts
