"""Demo tenant traffic: RAG queries from a few tenants through a gateway that obeys the
breakers, with the two counters Prometheus turns into alerts.

    python -m demo.traffic        # settings from TRAFFIC_* (see TrafficSettings)

Each tenant sends a steady `TRAFFIC_RATE` queries a second to `POST /gateway/query` on this
same server. The gateway is `receiver.client.breaker_middleware` in front of a stand-in
"platform" handler: an isolated tenant's query is shed with 503 before the platform sees
it, and a half-open tenant's probes pass and have their outcomes reported to the
receiver. Only the platform counts, so shed queries are in neither
`rag_queries_total{tenant_id}` nor `rag_queries_errors_total{tenant_id}` (the rules rely
on it); they are counted in `rag_queries_shed_total{tenant_id}`.

Failures are deterministic, not random: a tenant with error ratio r fails exactly r of
its queries, evenly spread, so its ratio over any window is r and a test can rely on a
noisy tenant (15 % by default) never looking like a failing one. A BURSTY tenant
(`id:tier:bursty`) fails 35 % of its queries in 7-second bursts every 20 s and 5 %
between: healthy, but with short spikes a detector must not mistake for a failure.

Control:
    GET  /tenants                     every tenant: tier, mode, counts, breaker as seen
    POST /tenants/{id}/fail           fail from now on ({"error_ratio": 0.8}, default 1.0)
    POST /tenants/{id}/recover        back to the tenant's usual error ratio
    GET  /metrics                     Prometheus text format
    GET  /healthz

At start every tenant's tier is registered with the receiver (PUT /v1/tenants/{id}), so
incidents get meaningful priorities.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from receiver import logs
from receiver.client import BreakerClient, breaker_middleware, header

log = logging.getLogger("demo.traffic")

TIERS = ("platinum", "gold", "silver", "bronze")
TENANT_HEADER = "X-Tenant-Id"
REGISTER_SECONDS = 30.0
MAX_IN_FLIGHT = 50  # per tenant: a stuck gateway must not pile up unbounded tasks


class TrafficSettings(BaseSettings):
    """TRAFFIC_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_", extra="ignore")

    receiver_url: str = "http://127.0.0.1:8080"
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    host: str = "0.0.0.0"
    port: int = Field(default=9100, ge=0, le=65535)
    # "6" (tenant-1 .. tenant-6, tiers and the noisy one chosen for you) or a list of
    # id[:tier[:error_ratio|bursty]], e.g. "acme:gold,globex:silver:0.15,initech:bronze:bursty".
    tenants: str = "6"
    rate: float = Field(default=5.0, gt=0, le=1000)  # queries a second, per tenant
    noisy_error_ratio: float = Field(default=0.15, ge=0, le=1)
    breaker_cache_seconds: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _read_token_file(self) -> TrafficSettings:
        if self.api_token_file is None:
            return self
        if self.api_token is not None:
            raise ValueError("set TRAFFIC_API_TOKEN or TRAFFIC_API_TOKEN_FILE, not both")
        token = self.api_token_file.read_text().strip()
        if not token:
            raise ValueError(f"TRAFFIC_API_TOKEN_FILE={self.api_token_file} is empty")
        self.api_token = SecretStr(token)
        return self


@dataclass(frozen=True)
class Bursts:
    """A healthy tenant with error bursts: `ratio` for `seconds` every `every` seconds,
    `between` the rest of the time (the issue's: 35 % for 7 s every 20 s, 5 % between)."""

    ratio: float = 0.35
    seconds: float = 7.0
    every: float = 20.0
    between: float = 0.05

    def ratio_at(self, elapsed: float) -> float:
        return self.ratio if elapsed % self.every < self.seconds else self.between


@dataclass(frozen=True)
class TenantSpec:
    tenant_id: str
    tier: str
    error_ratio: float = 0.0  # the tenant's usual share of failed queries
    bursts: Bursts | None = None


def parse_tenants(spec: str, *, noisy_error_ratio: float = 0.15) -> list[TenantSpec]:
    """`N` or `id[:tier[:error_ratio]],...` (see TrafficSettings.tenants)."""
    spec = spec.strip()
    if spec.isdigit():
        n = int(spec)
        if not 1 <= n <= 1000:
            raise ValueError(f"TRAFFIC_TENANTS={spec}: between 1 and 1000 tenants")
        # One gold tenant (its incident is a P1), the others silver and bronze; the last
        # one is noisy (errors under the isolating bar) when there are at least two.
        out = [
            TenantSpec(f"tenant-{i}", "gold" if i == 1 else ("silver", "bronze")[i % 2])
            for i in range(1, n + 1)
        ]
        if n >= 2 and noisy_error_ratio > 0:
            out[-1] = TenantSpec(out[-1].tenant_id, out[-1].tier, noisy_error_ratio)
        return out
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        parts = item.split(":")
        if len(parts) > 3 or not parts[0]:
            raise ValueError(f"TRAFFIC_TENANTS: {item!r} is not id[:tier[:error_ratio]]")
        tenant_id, tier, ratio = [*parts, "", ""][:3]
        tier = tier or "silver"
        if tier not in TIERS:
            raise ValueError(f"TRAFFIC_TENANTS: {item!r}: tier must be one of {TIERS}")
        if ratio == "bursty":
            bursts = Bursts()
            out.append(TenantSpec(tenant_id, tier, bursts.between, bursts))
            continue
        error_ratio = float(ratio) if ratio else 0.0
        if not 0 <= error_ratio <= 1:
            raise ValueError(f"TRAFFIC_TENANTS: {item!r}: error ratio must be in [0, 1]")
        out.append(TenantSpec(tenant_id, tier, error_ratio))
    if not out or len({t.tenant_id for t in out}) != len(out):
        raise ValueError(f"TRAFFIC_TENANTS={spec!r}: at least one tenant, each once")
    return out


@dataclass
class TenantState:
    spec: TenantSpec
    error_ratio: float
    failing_since: datetime | None = None
    breaker: str = "unknown"  # as the gateway last saw it
    sent: int = 0
    served: int = 0
    failed: int = 0
    shed: int = 0
    lost: int = 0  # no answer from the gateway at all
    _debt: float = field(default=0.0, repr=False)
    _born: float = field(default_factory=time.monotonic, repr=False)

    def current_ratio(self) -> float:
        """The share failing now: a failure's, else the tenant's bursts or usual ratio."""
        bursts = self.spec.bursts
        if self.failing_since is None and bursts is not None:
            return bursts.ratio_at(time.monotonic() - self._born)
        return self.error_ratio

    def next_query_fails(self) -> bool:
        """Exactly `current_ratio()` of the queries fail, evenly spread."""
        self._debt += self.current_ratio()
        if self._debt >= 1.0 - 1e-9:
            self._debt -= 1.0
            return True
        return False

    @property
    def mode(self) -> str:
        if self.failing_since is not None:
            return "failing"
        if self.spec.bursts is not None:
            return "bursty"
        return "noisy" if self.error_ratio > 0 else "healthy"

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.spec.tenant_id,
            "tier": self.spec.tier,
            "mode": self.mode,
            "error_ratio": self.error_ratio,
            "failing_since": self.failing_since.isoformat() if self.failing_since else None,
            "breaker": self.breaker,
            "sent": self.sent,
            "served": self.served,
            "failed": self.failed,
            "shed": self.shed,
            "lost": self.lost,
        }


class Metrics:
    def __init__(self, tenants: list[TenantSpec]) -> None:
        self.registry = CollectorRegistry()
        self.total = Counter(
            "rag_queries",
            "RAG queries the platform served for a tenant (shed queries excluded).",
            ["tenant_id"],
            registry=self.registry,
        )
        self.errors = Counter(
            "rag_queries_errors",
            "RAG queries of a tenant that failed; a subset of rag_queries_total.",
            ["tenant_id"],
            registry=self.registry,
        )
        self.shed = Counter(
            "rag_queries_shed",
            "RAG queries the gateway shed because the tenant's breaker isolates it.",
            ["tenant_id"],
            registry=self.registry,
        )
        # Every series exists at 0 from the start: rate() cannot count the first
        # increments of a series that appears with them (tenant_errors.rules.yml).
        for spec in tenants:
            for counter in (self.total, self.errors, self.shed):
                counter.labels(tenant_id=spec.tenant_id)


@dataclass
class Traffic:
    settings: TrafficSettings
    tenants: dict[str, TenantState]
    metrics: Metrics
    client: BreakerClient
    registered: bool = False


TRAFFIC = web.AppKey("traffic", Traffic)


# --- the gateway and the platform behind it ---------------------------------------------


async def platform_query(request: web.Request) -> web.Response:
    """The stand-in platform: it only sees what the gateway let through, and counts it."""
    traffic = request.app[TRAFFIC]
    tenant = traffic.tenants.get(request.headers.get(TENANT_HEADER, ""))
    if tenant is None:
        return web.json_response(
            {"error": "unknown_tenant", "detail": "no such tenant"}, status=404
        )
    tenant_id = tenant.spec.tenant_id
    traffic.metrics.total.labels(tenant_id=tenant_id).inc()
    if tenant.next_query_fails():
        traffic.metrics.errors.labels(tenant_id=tenant_id).inc()
        return web.json_response(
            {"error": "rag_backend_failed", "detail": f"retrieval failed for {tenant_id}"},
            status=500,
        )
    return web.json_response({"tenant_id": tenant_id, "answer": "42"})


def create_gateway(traffic: Traffic) -> web.Application:
    gateway = web.Application(
        middlewares=[breaker_middleware(traffic.client, tenant_of=header(TENANT_HEADER))]
    )
    gateway[TRAFFIC] = traffic
    gateway.router.add_post("/query", platform_query)
    return gateway


# --- control ----------------------------------------------------------------------------


def _tenant(request: web.Request) -> TenantState:
    tenant = request.app[TRAFFIC].tenants.get(request.match_info["tenant_id"])
    if tenant is None:
        raise web.HTTPNotFound(
            text='{"error": "not_found", "detail": "no such tenant"}',
            content_type="application/json",
        )
    return tenant


async def list_tenants(request: web.Request) -> web.Response:
    traffic = request.app[TRAFFIC]
    return web.json_response(
        {
            "registered": traffic.registered,
            "rate": traffic.settings.rate,
            "tenants": [t.to_json() for t in traffic.tenants.values()],
        }
    )


async def get_tenant(request: web.Request) -> web.Response:
    return web.json_response(_tenant(request).to_json())


async def fail_tenant(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    error_ratio = 1.0
    if request.can_read_body:
        try:
            body = await request.json()
            error_ratio = float(body.get("error_ratio", 1.0))
        except (ValueError, TypeError, AttributeError):
            error_ratio = math.nan
        if not 0 < error_ratio <= 1:
            return web.json_response(
                {"error": "invalid", "detail": 'body: {"error_ratio": a number in (0, 1]}'},
                status=422,
            )
    tenant.error_ratio = error_ratio
    tenant.failing_since = datetime.now(UTC)
    log.warning(
        "tenant failing",
        extra={"tenant_id": tenant.spec.tenant_id, "error_ratio": error_ratio},
    )
    return web.json_response(tenant.to_json())


async def recover_tenant(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    tenant.error_ratio = tenant.spec.error_ratio
    tenant.failing_since = None
    log.warning("tenant recovered", extra={"tenant_id": tenant.spec.tenant_id})
    return web.json_response(tenant.to_json())


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[TRAFFIC].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "registered": request.app[TRAFFIC].registered})


# --- background work --------------------------------------------------------------------


async def _register(traffic: Traffic) -> None:
    """Tell the receiver each tenant's tier; retried for a while if it is not up yet."""
    settings = traffic.settings
    token = settings.api_token.get_secret_value() if settings.api_token else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = settings.receiver_url.rstrip("/")
    deadline = time.monotonic() + REGISTER_SECONDS
    pending = list(traffic.tenants.values())
    refused: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while pending and time.monotonic() < deadline:
            tenant = pending[0]
            url = f"{base}/v1/tenants/{quote(tenant.spec.tenant_id, safe='')}"
            body = {
                "tier": tenant.spec.tier,
                "name": f"Demo tenant {tenant.spec.tenant_id}",
                "actor": "traffic-generator",
            }
            try:
                async with session.put(url, json=body, headers=headers) as r:
                    status, detail = r.status, (await r.text())[:300]
            except (aiohttp.ClientError, TimeoutError):
                status, detail = None, ""
            if status is None or status >= 500:
                await asyncio.sleep(1.0)  # not up yet, or busy: try again
                continue
            pending.pop(0)
            if status >= 400:  # a wrong token or tenant id: retrying will not help
                refused.append(tenant.spec.tenant_id)
                log.error(
                    "tenant registration refused",
                    extra={"tenant_id": tenant.spec.tenant_id, "status": status, "detail": detail},
                )
    if pending or refused:
        log.error(
            "could not register tenants with the receiver; incidents will treat them as bronze",
            extra={"tenants": [t.spec.tenant_id for t in pending] + refused, "receiver": base},
        )
        return
    traffic.registered = True
    log.info("tenants registered", extra={"tenants": len(traffic.tenants), "receiver": base})


async def register_tenants(app: web.Application) -> AsyncIterator[None]:
    """Registration runs beside the traffic: /healthz says when it is done."""
    task = asyncio.create_task(_register(app[TRAFFIC]), name="register-tenants")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _self_url(settings: TrafficSettings, port: int) -> str:
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _send(
    session: aiohttp.ClientSession, url: str, traffic: Traffic, tenant: TenantState
) -> None:
    tenant.sent += 1
    tenant_id = tenant.spec.tenant_id
    try:
        async with session.post(url, headers={TENANT_HEADER: tenant_id}, json={"q": "?"}) as r:
            body = await r.json(content_type=None)
            shed = isinstance(body, dict) and body.get("error") == "tenant_isolated"
            if r.status == 503 and shed:
                tenant.shed += 1
                traffic.metrics.shed.labels(tenant_id=tenant_id).inc()
            elif r.status >= 500:
                tenant.failed += 1
            else:
                tenant.served += 1
    except (aiohttp.ClientError, TimeoutError, ValueError):
        tenant.lost += 1
    decision = await traffic.client.decision(tenant_id)  # cached: no extra round trip
    if decision.state != tenant.breaker:
        if tenant.breaker != "unknown" or decision.state != "closed":
            log.info(
                "breaker seen by the gateway",
                extra={"tenant_id": tenant_id, "from": tenant.breaker, "to": decision.state},
            )
        tenant.breaker = decision.state


async def _drive(
    session: aiohttp.ClientSession, url: str, traffic: Traffic, tenant: TenantState
) -> None:
    """A steady `rate` queries a second, never bursting to catch up after a stall."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / traffic.settings.rate
    in_flight: set[asyncio.Task[None]] = set()
    next_at = loop.time() + random.uniform(0, interval)  # tenants out of step
    try:
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time() - interval)
            if len(in_flight) >= MAX_IN_FLIGHT:
                tenant.sent += 1
                tenant.lost += 1
                continue
            task = asyncio.create_task(_send(session, url, traffic, tenant))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:
        for task in list(in_flight):
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)


async def drive_traffic(app: web.Application) -> AsyncIterator[None]:
    traffic = app[TRAFFIC]
    url = _self_url(traffic.settings, traffic.settings.port) + "/gateway/query"
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
    # The server listens only once every cleanup context has started: the first queries
    # may find nobody there and count as lost, which is fine.
    tasks = [
        asyncio.create_task(_drive(session, url, traffic, t), name=f"traffic-{t.spec.tenant_id}")
        for t in traffic.tenants.values()
    ]
    log.info(
        "sending traffic",
        extra={"tenants": len(tasks), "rate_per_tenant": traffic.settings.rate, "url": url},
    )
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await session.close()


def create_app(settings: TrafficSettings, *, drive: bool = True) -> web.Application:
    """The generator; `drive=False` leaves the traffic to the caller (tests)."""
    specs = parse_tenants(settings.tenants, noisy_error_ratio=settings.noisy_error_ratio)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    traffic = Traffic(
        settings=settings,
        tenants={s.tenant_id: TenantState(s, s.error_ratio) for s in specs},
        metrics=Metrics(specs),
        client=BreakerClient(
            settings.receiver_url, token=token, cache_seconds=settings.breaker_cache_seconds
        ),
    )
    app = web.Application()
    app[TRAFFIC] = traffic
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/tenants", list_tenants)
    app.router.add_get("/tenants/{tenant_id}", get_tenant)
    app.router.add_post("/tenants/{tenant_id}/fail", fail_tenant)
    app.router.add_post("/tenants/{tenant_id}/recover", recover_tenant)
    app.add_subapp("/gateway", create_gateway(traffic))
    # Dependency order: the breaker client, then the tiers, then the traffic using both.
    app.cleanup_ctx.append(traffic.client.cleanup_ctx)
    app.cleanup_ctx.append(register_tenants)
    if drive:
        app.cleanup_ctx.append(drive_traffic)
    return app


def main() -> int:
    try:
        settings = TrafficSettings()
        parse_tenants(settings.tenants, noisy_error_ratio=settings.noisy_error_ratio)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"traffic: invalid settings: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    # No rag_queries_created{tenant_id} series beside the counters: nothing reads them.
    disable_created_metrics()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
