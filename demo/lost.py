"""A delivery lost on purpose, recovered from Alertmanager's own API (DESIGN.md "The
truth from Alertmanager"), for tests/e2e.

The stack routes alerts of one tenant (StackOptions.black_hole_tenant) to a webhook on a
port nobody listens on, so Alertmanager's deliveries of that group fail, are retried
and given up: the receiver never hears of them. An isolating alert for that tenant is
posted to Alertmanager (POST /api/v2/alerts, as Prometheus posts them); the receiver's
reconciler finds it in GET /api/v2/alerts and trips the breaker. Then the alert is ended
(posted again with endsAt now): no resolved is delivered either, and the reconciler
resolves the instance after two complete polls without it.

    lost = run_lost_delivery(endpoints, tenant="tenant-lost", deadline=...)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from demo.probes import Endpoints, StackError, http

ISOLATING_ALERT = "TenantErrorRateHigh"


@dataclass
class LostDelivery:
    tenant: str
    posted_at: float
    fired_at: float | None = None  # the reconciler recorded it firing (alert.reconciled)
    opened_at: float | None = None  # the tenant's breaker read open
    ended_at: float | None = None  # the alert was ended at Alertmanager
    resolved_at: float | None = None  # the reconciler resolved it
    webhook_deliveries: int = 0  # webhooks that carried the tenant (must stay 0)
    reconciled: list[dict[str, Any]] | None = None  # the alert.reconciled rows' details


def _alert(tenant: str, *, starts_at: datetime, ends_at: datetime) -> list[dict[str, Any]]:
    return [
        {
            "labels": {
                "alertname": ISOLATING_ALERT,
                "tenant_id": tenant,
                "isolate": "true",
                "severity": "critical",
            },
            "annotations": {"summary": f"Tenant {tenant} failing (its deliveries are lost)"},
            "startsAt": starts_at.isoformat(),
            "endsAt": ends_at.isoformat(),
            "generatorURL": "",
        }
    ]


def _post(endpoints: Endpoints, body: list[dict[str, Any]]) -> None:
    reply = http("POST", f"{endpoints.alertmanager_url}/api/v2/alerts", body=body)
    if not reply.ok:
        raise StackError(f"POST /api/v2/alerts: {reply.status} {reply.body}")


def _reconciled(endpoints: Endpoints, tenant: str) -> list[dict[str, Any]]:
    rows = endpoints.sql(
        "SELECT details FROM audit_log WHERE action = 'alert.reconciled' AND tenant_id = %s"
        " ORDER BY id",
        tenant,
    )
    return [d for (d,) in rows]


def run_lost_delivery(endpoints: Endpoints, *, tenant: str, deadline: float) -> LostDelivery:
    """Post, wait for the reconciler to fire it, end it, wait for it to resolve."""
    started = datetime.now(UTC)
    lost = LostDelivery(tenant=tenant, posted_at=time.time())
    _post(endpoints, _alert(tenant, starts_at=started, ends_at=started + timedelta(minutes=10)))
    while time.monotonic() < deadline and lost.opened_at is None:
        rows = _reconciled(endpoints, tenant)
        if rows and lost.fired_at is None:
            lost.fired_at = time.time()
        reply = endpoints.api("GET", f"/v1/tenants/{tenant}/breaker")
        if reply.ok and reply.body["state"] == "open":
            lost.opened_at = time.time()
        time.sleep(0.25)
    if lost.opened_at is None:
        return lost
    ended = datetime.now(UTC)
    _post(endpoints, _alert(tenant, starts_at=started, ends_at=ended))
    lost.ended_at = time.time()
    while time.monotonic() < deadline:
        rows = _reconciled(endpoints, tenant)
        if any(r["to"] == "resolved" for r in rows):
            lost.resolved_at = time.time()
            break
        time.sleep(0.25)
    lost.reconciled = _reconciled(endpoints, tenant)
    lost.webhook_deliveries = endpoints.sql(
        "SELECT count(*) FROM audit_log WHERE action LIKE 'alert.%%' AND actor = 'alertmanager'"
        " AND tenant_id = %s",
        tenant,
    )[0][0]
    return lost
