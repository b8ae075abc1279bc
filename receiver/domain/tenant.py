"""A tenant as registered (tier, name, hourly cost, admin e-mail), and what its health
read shows besides the breaker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from receiver.domain.incident import IncidentRecord


@dataclass(frozen=True)
class Registration:
    """What an operator registered; `tier` as stored (None: never registered)."""

    tier: str | None
    name: str | None
    hourly_cost: float | None
    admin_email: str | None


@dataclass(frozen=True)
class TenantRecord:
    tenant_id: str
    tier: str | None
    name: str | None
    hourly_cost: float | None
    admin_email: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RecentAlert:
    fingerprint: str
    starts_at: datetime
    ends_at: datetime | None
    status: str
    alertname: str
    isolating: bool
    annotations: dict[str, Any]


@dataclass(frozen=True)
class TenantHealth:
    """The tenant's registration, its unresolved incident and its latest alerts (the
    breaker comes from the replica's in-memory view)."""

    tenant_id: str
    tenant: Registration | None
    open_incident: IncidentRecord | None
    recent_alerts: list[RecentAlert]


@dataclass(frozen=True)
class BoardTenant:
    """A known tenant as the console's breaker board shows it, beside the breaker the
    replica's view holds: its registration and the latest breaker change of its audit
    record (a transition, an operator's override or a suppressed trip)."""

    tenant_id: str
    tier: str | None
    name: str | None
    last_action: str | None = None
    last_at: datetime | None = None
    last_actor: str | None = None
    last_reason: str | None = None
