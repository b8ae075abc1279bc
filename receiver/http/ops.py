"""Liveness, readiness and metrics: unauthenticated, for orchestrators and Prometheus."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from receiver import keys, migrate
from receiver.http.parsing import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers, the schema is at head and the breaker view is
    following changes; each check says what is wrong, for the operator reading it."""
    app = request.app
    checks: dict[str, str] = {}
    try:
        async with app[keys.ENGINE].connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await conn.run_sync(migrate.current_revision)
        checks["database"] = "ok"
        head = migrate.head_revision()
        checks["schema"] = (
            "ok" if current == head else f"at {current or 'nothing'}, expected {head}: run migrate"
        )
    except Exception as exc:  # any failure to reach the database means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
        checks["schema"] = "unknown"
    listener = app[keys.LISTENER]
    checks["breaker_listener"] = (
        "ok" if listener.connected.is_set() else f"reconnecting: {listener.last_error}"
    )
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            # Informational: a channel without settings is off, not a failure.
            "notification_channels": sorted(c.value for c in app[keys.SENDERS]),
        },
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
