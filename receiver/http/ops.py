"""Liveness, readiness and metrics: unauthenticated, for orchestrators and Prometheus."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver import keys
from receiver.db import migrate
from receiver.db.ops import schema_revision
from receiver.domain.notification import Channel
from receiver.http.parsing import json_response
from receiver.service.reconcile import PipelineStatus, pipeline_status

# Probes come every few seconds from every orchestrator and load balancer; one database
# round trip a second is enough to answer all of them.
READINESS_CACHE_SECONDS = 1.0


@dataclass
class _Readiness:
    head: str | None  # computed once: the migration scripts do not change under a process
    checked_at: float = float("-inf")
    database: dict[str, str] = field(default_factory=dict)
    pipeline: PipelineStatus | None = None


READINESS = web.AppKey("readiness", _Readiness)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _database_checks(app: web.Application) -> dict[str, str]:
    state = app[READINESS]
    if time.monotonic() - state.checked_at < READINESS_CACHE_SECONDS:
        return state.database
    try:
        current = await schema_revision(app[keys.ENGINE])
        checks = {
            "database": "ok",
            "schema": "ok"
            if current == state.head
            else f"at {current or 'nothing'}, expected {state.head}: run migrate",
        }
    except Exception as exc:  # any failure to reach the database means "not ready"
        # Only the class: the message may name the database host and user.
        checks = {"database": f"unreachable: {type(exc).__name__}", "schema": "unknown"}
    if checks["schema"] == "ok":
        try:
            state.pipeline = await pipeline_status(sessions=app[keys.SESSIONS])
        except Exception:  # informational only: never a reason to fail readiness
            state.pipeline = None
    state.database, state.checked_at = checks, time.monotonic()
    return checks


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers, the schema is at head and the breaker view is
    following changes; each check says what is wrong, for the operator reading it."""
    app = request.app
    checks = dict(await _database_checks(app))
    listener = app[keys.LISTENER]
    checks["breaker_listener"] = (
        "ok" if listener.connected.is_set() else f"reconnecting: {listener.last_error}"
    )
    ready = all(v == "ok" for v in checks.values())
    senders = app[keys.SENDERS]
    channels: list[Channel] = list(senders)
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        # Informational: a channel without settings is off, not a failure.
        "notification_channels": sorted(c.value for c in channels),
        # Informational too: a channel's configuration error (certificate, credentials)
        # as the outbox worker last met it; it does not make the receiver unready.
        "notification_health": app[keys.CHANNEL_HEALTH].report(channels),
        # Informational too (DESIGN.md "The truth from Alertmanager"): a stale
        # reconciliation or a silent pipeline is an incident, not a reason to stop serving.
        **_pipeline(app, app[READINESS].pipeline),
    }
    return json_response(body, status=200 if ready else 503)


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at is not None else None


def _pipeline(app: web.Application, status: PipelineStatus | None) -> dict[str, Any]:
    settings, config = app[keys.SETTINGS], app[keys.CONFIG]
    now = datetime.now(UTC)
    peers = settings.alertmanager_peers
    record = status.reconciler if status else None
    reconciliation: dict[str, Any] = {
        "status": "off" if not peers else "never run",
        "peers": len(peers),
        "interval_seconds": settings.reconcile_seconds,
    }
    if peers and record is not None:
        success = record.last_complete_at
        fresh = (
            success is not None
            and (now - success).total_seconds() <= 3 * settings.reconcile_seconds
        )
        reconciliation.update(
            status="ok"
            if fresh and not record.last_failed
            else ("failing" if record.last_failed else "stale"),
            last_poll_at=_iso(record.last_poll_at),
            last_success_at=_iso(success),
            last_failed=record.last_failed,
            last_changes=record.last_changes,
            absent_once=record.absent,
            polling=record.lease_owner,
        )
    timeout = config.heartbeat_timeout
    beat = status.heartbeat if status else None
    heartbeat: dict[str, Any] = {
        "status": "off" if timeout is None else "unknown",
        "alertname": config.heartbeat_alertname,
        "timeout_seconds": timeout.total_seconds() if timeout else 0,
    }
    if timeout is not None and beat is not None:
        heartbeat.update(
            status="lost"
            if beat.lost_at is not None
            else ("ok" if beat.last_heartbeat_at is not None else "waiting for the first"),
            last_heartbeat_at=_iso(beat.last_heartbeat_at),
            age_seconds=round(beat.age(now).total_seconds(), 1),
            lost_at=_iso(beat.lost_at),
            incident=beat.incident_id,
        )
    return {"reconciliation": reconciliation, "heartbeat": heartbeat}


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def add_routes(app: web.Application) -> None:
    app[READINESS] = _Readiness(head=migrate.head_revision())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
