"""POST /v1/alertmanager: Alertmanager's webhook."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from aiohttp import web

from receiver import keys
from receiver.db.transaction import deadline
from receiver.domain.alerts import AlertRole, AlertStatus
from receiver.http.parsing import json_response, parse_model, read_json_body
from receiver.http.schemas import WebhookPayload, WebhookSummary
from receiver.metrics import Metrics
from receiver.service.ingest import IngestResult, WebhookDelivery


async def alertmanager_webhook(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[keys.METRICS]
    settings = app[keys.SETTINGS]
    # Committed, or 503 with Retry-After, within the deadline; a 200 only after the commit
    # returned (db/transaction.py, in_transaction, on cancellation and late commits).
    with metrics.processing.time(), deadline(settings.request_deadline_seconds):
        body = await read_json_body(request, max_bytes=settings.max_body_bytes)
        payload = parse_model(WebhookPayload, body)
        config = app[keys.CONFIG]
        delivery = _delivery(payload, tenant_label=config.tenant_label)
        # No clock from here: the transaction takes the database's (service/ingest.py);
        # deliveries arriving together share it (service/group_commit.py).
        result = await app[keys.BATCHER].submit(delivery)
        # Read your writes: this replica answers gateways with the new state at once.
        app[keys.VIEW].apply(result.breakers)
    _count(metrics, delivery, result)
    return json_response(_summary(result).model_dump(mode="json"))


def _delivery(payload: WebhookPayload, *, tenant_label: str) -> WebhookDelivery:
    return WebhookDelivery(
        receiver=payload.receiver,
        status=payload.status.value,
        group_key=payload.groupKey,
        group_labels=payload.groupLabels,
        external_url=payload.externalURL,
        truncated_alerts=payload.truncatedAlerts,
        alerts=payload.instances(tenant_label=tenant_label),
    )


FIRING = AlertStatus.FIRING


def _count(metrics: Metrics, delivery: WebhookDelivery, result: IngestResult) -> None:
    metrics.deliveries.labels(status=delivery.status).inc()
    metrics.alerts.labels(result="new").inc(result.new)
    metrics.alerts.labels(result="changed").inc(result.changed)
    metrics.alerts.labels(result="duplicate").inc(result.duplicates)
    for state, n in Counter(v.breaker.state.value for v in result.breakers).items():
        metrics.transitions.labels(to=state).inc(n)
    # Detection time: from the alert's startsAt to the trip it caused in this delivery.
    now = result.now
    if now is None:
        return
    tripped = {v.breaker.tenant_id for v in result.breakers if v.breaker.opened_at == now}
    starts: dict[str, datetime] = {}
    for a in delivery.alerts:
        if a.tenant_id in tripped and a.role is AlertRole.ISOLATING and a.status is FIRING:
            starts[a.tenant_id] = min(a.starts_at, starts.get(a.tenant_id, a.starts_at))
    for started in starts.values():
        metrics.detection.observe(max(0.0, (now - started).total_seconds()))


def _summary(result: IngestResult) -> WebhookSummary:
    return WebhookSummary(
        delivery_id=result.delivery_id,
        alerts=result.alerts,
        new=result.new,
        changed=result.changed,
        duplicates=result.duplicates,
        truncated=result.truncated,
        breaker_transitions=result.transitions,
        incidents=list(result.incidents),
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/alertmanager", alertmanager_webhook)
