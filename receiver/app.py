"""Application factory: typed keys, one cleanup context per resource, in dependency order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from receiver.cache.breaker_view import BreakerView
from receiver.cache.listener import BreakerListener
from receiver.channels import build_senders
from receiver.channels.base import Sender
from receiver.channels.health import ChannelHealth
from receiver.channels.pacing import Pacer
from receiver.channels.worker import OutboxWorker, RetryPolicy
from receiver.config import ServiceConfig
from receiver.db.engine import create_engine, session_factory
from receiver.domain.notification import Channel
from receiver.errors import ReceiverError
from receiver.http import analytics, breakers, incidents, ops, tenants, webhook
from receiver.http.auth import TokenRegistry
from receiver.http.middlewares import auth_middleware, error_middleware, hot_read_middleware
from receiver.keys import (
    BATCHER,
    CHANNEL_HEALTH,
    CONFIG,
    ENGINE,
    HTTP_CLIENT,
    LISTENER,
    METRICS,
    SENDERS,
    SESSIONS,
    SETTINGS,
    VIEW,
)
from receiver.metrics import Metrics
from receiver.peers.alertmanager import peer_name, poll_peers
from receiver.service import analytics as analytics_service
from receiver.service import breakers as breaker_service
from receiver.service import heartbeat as heartbeat_service
from receiver.service import incidents as incident_service
from receiver.service import reconcile as reconcile_service
from receiver.service.group_commit import Batcher
from receiver.service.seals import AuditSealer
from receiver.settings import Settings
from receiver.ui import setup as setup_console

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    # Also here, not only in `serve`: an app built without tokens would serve /v1 openly.
    settings.check_startable()
    config = ServiceConfig.from_settings(settings)
    view = BreakerView(config.breaker)
    metrics = Metrics(view)

    def count_rejection(reason: str) -> None:
        metrics.rejections.labels(reason=reason).inc()

    tokens = TokenRegistry.from_settings(settings)
    app = web.Application(
        # aiohttp refuses larger bodies itself; the webhook handler turns it into JSON 413.
        client_max_size=settings.max_body_bytes,
        middlewares=[
            hot_read_middleware(tokens=tokens),
            error_middleware(count_rejection),
            auth_middleware(tokens=tokens, on_webhook_rejection=count_rejection),
        ],
    )
    app[SETTINGS] = settings
    app[CONFIG] = config
    app[VIEW] = view
    app[METRICS] = metrics
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_group_commit)
    app.cleanup_ctx.append(_breaker_listener)
    app.cleanup_ctx.append(_sweeper)
    app.cleanup_ctx.append(_sla_checker)
    app.cleanup_ctx.append(_notifications)
    app.cleanup_ctx.append(_audit_sealer)
    app.cleanup_ctx.append(_reconciler)
    app.cleanup_ctx.append(_heartbeat)
    app.cleanup_ctx.append(_store_gauges)
    ops.add_routes(app)
    webhook.add_routes(app)
    breakers.add_routes(app)
    tenants.add_routes(app)
    incidents.add_routes(app)
    analytics.add_routes(app)
    setup_console(app, settings)
    return app


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS])
    app[ENGINE] = engine
    app[SESSIONS] = session_factory(engine)
    yield
    await engine.dispose()


async def _group_commit(app: web.Application) -> AsyncIterator[None]:
    """Webhook deliveries that arrive together share a transaction (service/group_commit.py);
    on the way out, what is gathered is written before the engine goes."""
    settings = app[SETTINGS]
    batcher = Batcher(
        sessions=app[SESSIONS],
        config=app[CONFIG],
        wait_seconds=settings.batch_wait_ms / 1000,
        max_deliveries=settings.batch_max_deliveries,
    )
    app[BATCHER] = batcher
    yield
    await batcher.close()


async def _breaker_listener(app: web.Application) -> AsyncIterator[None]:
    listener = BreakerListener(app[SETTINGS].listen_url, app[VIEW])
    app[LISTENER] = listener
    async with _running(listener.run(), name="breaker-listener"):
        # Serve with a loaded view when the database is there; if it is not, start anyway
        # (readyz says not ready) rather than crash-loop: the listener keeps trying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.connected.wait(), timeout=10)
        yield


async def _notifications(app: web.Application) -> AsyncIterator[None]:
    """The outbound HTTP client, the configured channels and the outbox worker."""
    settings = app[SETTINGS]
    client = aiohttp.ClientSession()
    app[HTTP_CLIENT] = client
    senders: dict[Channel, Sender] = build_senders(
        session=client,
        slack_webhook_url=settings.slack_webhook_url,
        pagerduty_routing_key=_secret(settings.pagerduty_routing_key),
        pagerduty_events_url=settings.pagerduty_events_url,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        email_from=settings.email_from,
        email_to=settings.email_to,
        smtp_tls=settings.smtp_tls_mode,
        smtp_ca_file=None if settings.smtp_ca_file is None else str(settings.smtp_ca_file),
        smtp_max_recipients=settings.smtp_max_recipients,
        smtp_username=settings.smtp_username,
        smtp_password=_secret(settings.smtp_password),
    )
    app[SENDERS] = senders
    health = ChannelHealth()
    app[CHANNEL_HEALTH] = health
    log.info(
        "notification channels",
        extra={"enabled": sorted(c.value for c in senders) or "none"},
    )
    worker = OutboxWorker(
        sessions=app[SESSIONS],
        senders=senders,
        policy=RetryPolicy(
            max_attempts=settings.notify_max_attempts or None,
            base_seconds=settings.notify_backoff_base_seconds,
            max_seconds=settings.notify_backoff_max_seconds,
            give_up_seconds={
                Channel.PAGERDUTY: settings.pagerduty_give_up_seconds,
                Channel.SLACK: settings.slack_give_up_seconds,
                Channel.EMAIL: settings.email_give_up_seconds,
            },
        ),
        poll_seconds=settings.outbox_poll_seconds,
        pacer=Pacer(
            {
                Channel.PAGERDUTY: settings.pagerduty_events_per_minute / 60,
                Channel.SLACK: settings.slack_messages_per_second,
                Channel.EMAIL: settings.email_messages_per_second,
            }
        ),
        health=health,
    )
    async with _running(worker.run_forever(), name="outbox-worker"):
        yield
    await client.close()


@contextlib.asynccontextmanager
async def _running(job: Coroutine[Any, Any, None], *, name: str) -> AsyncIterator[None]:
    """A background task for the life of the block, cancelled and awaited on the way out."""
    task = asyncio.create_task(job, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _every(seconds: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` every `seconds` for ever; a round that fails is logged and skipped (the
    next one retries), so a database outage never kills the loop."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except ReceiverError as exc:
            log.warning("%s skipped", what, extra={"error": exc.detail})
        except Exception:
            log.exception("%s failed", what)


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    async def sweep() -> None:
        changed = await breaker_service.sweep(sessions=app[SESSIONS], config=app[CONFIG])
        app[VIEW].apply(changed)
        for v in changed:
            app[METRICS].transitions.labels(to=v.breaker.state.value).inc()

    interval = app[SETTINGS].sweep_interval_seconds
    async with _running(_every(interval, "breaker sweep", sweep), name="breaker-sweeper"):
        yield


async def _sla_checker(app: web.Application) -> AsyncIterator[None]:
    """Flag incidents left unacknowledged past ack_due_at (every replica runs this; SKIP
    LOCKED keeps them from flagging one incident twice)."""

    async def check() -> None:
        breached = await incident_service.check_sla_breaches(
            sessions=app[SESSIONS], config=app[CONFIG], now=datetime.now(UTC)
        )
        if breached:
            log.info("incidents breached their SLA", extra={"incidents": breached})

    interval = app[SETTINGS].sla_check_interval_seconds
    async with _running(_every(interval, "SLA check", check), name="sla-checker"):
        yield


async def _audit_sealer(app: web.Application) -> AsyncIterator[None]:
    """Seal the audit rows written since the last seal (DESIGN.md "Tamper evidence"); one
    replica at a time, off the hot path."""
    sealer = AuditSealer(app[SESSIONS])

    async def seal() -> None:
        sealed = await sealer.run_once()
        if sealed is not None:
            log.info(
                "audit rows sealed",
                extra={"seal": sealed.id, "first_id": sealed.first_id, "last_id": sealed.last_id},
            )

    interval = app[SETTINGS].audit_seal_seconds
    async with _running(_every(interval, "audit seal", seal), name="audit-sealer"):
        yield


def _replica_name() -> str:
    """Who holds the reconciler's lease, as operators read it in reconciler_state."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def _reconciler(app: web.Application) -> AsyncIterator[None]:
    """Reconcile with every Alertmanager peer's API (DESIGN.md "The truth from
    Alertmanager"): every replica tries every interval; the lease lets one poll at a time."""
    settings = app[SETTINGS]
    peers = settings.alertmanager_peers
    if not peers:
        yield
        return
    owner = _replica_name()
    metrics = app[METRICS]
    metrics.know_peers([peer_name(p) for p in peers])
    timeout = settings.alertmanager_timeout_seconds
    client = aiohttp.ClientSession()

    async def reconcile() -> None:
        sessions = app[SESSIONS]
        if not await reconcile_service.claim(
            sessions=sessions,
            owner=owner,
            interval_seconds=settings.reconcile_seconds,
            lease_seconds=2 * timeout + 10,
        ):
            return
        answers = await poll_peers(client, peers, timeout_seconds=timeout)
        outcome = await reconcile_service.apply_poll(
            sessions=sessions,
            owner=owner,
            answers=answers,
            config=app[CONFIG],
            now=datetime.now(UTC),
        )
        if not outcome.applied:
            return
        app[VIEW].apply(list(outcome.breakers))
        metrics.count_reconciliation(
            complete=outcome.complete,
            fired=outcome.fired,
            resolved=outcome.resolved,
            failed_peers=[f.peer for f in outcome.failed],
        )
        if outcome.failed:
            log.warning(
                "reconciliation changed nothing: a peer failed",
                extra={"failed": {f.peer: f.reason for f in outcome.failed}},
            )
        elif outcome.fired or outcome.resolved:
            log.info(
                "reconciliation changed alerts",
                extra={"fired": outcome.fired, "resolved": outcome.resolved},
            )

    interval = settings.reconcile_seconds
    try:
        async with _running(_every(interval, "reconciliation", reconcile), name="reconciler"):
            yield
    finally:
        await client.close()


async def _heartbeat(app: web.Application) -> AsyncIterator[None]:
    """The dead man's switch: remember the first start on this database, then check for
    silence every few seconds (every replica; SKIP LOCKED makes it one at a time)."""
    config = app[CONFIG]
    timeout = config.heartbeat_timeout
    if timeout is None:
        yield
        return
    try:
        await heartbeat_service.started(sessions=app[SESSIONS], now=datetime.now(UTC))
    except ReceiverError as exc:  # the database is away: the first check records it
        log.warning("heartbeat start not recorded yet", extra={"error": exc.detail})

    async def check() -> None:
        checked = await heartbeat_service.check(
            sessions=app[SESSIONS], config=config, now=datetime.now(UTC)
        )
        if checked.state is not None:
            app[METRICS].heartbeat_since = checked.state.since
        if checked.opened is not None:
            log.error(
                "alerting pipeline silent: no heartbeat",
                extra={"incident": checked.opened, "alertname": config.heartbeat_alertname},
            )

    interval = max(0.2, min(5.0, timeout.total_seconds() / 10))
    async with _running(_every(interval, "heartbeat check", check), name="heartbeat-checker"):
        yield


STORE_GAUGES_SECONDS = 5.0


async def _store_gauges(app: web.Application) -> AsyncIterator[None]:
    """Outbox backlog and unresolved incidents for /metrics, read every few seconds (a
    scrape never waits on the database)."""

    async def refresh() -> None:
        counts = await analytics_service.store_counts(sessions=app[SESSIONS], now=datetime.now(UTC))
        app[METRICS].store.counts = counts

    with contextlib.suppress(ReceiverError):
        await refresh()
    async with _running(_every(STORE_GAUGES_SECONDS, "store gauges", refresh), name="gauges"):
        yield
