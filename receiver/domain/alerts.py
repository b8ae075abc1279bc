"""Alert instances as the receiver understands them, independent of the wire format.

An instance's identity is (fingerprint, starts_at): Alertmanager resends an instance on
every retry, HA peer and repeat interval, and a new firing of the same labels gets a new
startsAt. Roles come from labels (DESIGN.md "Alert roles").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_SEPARATOR = 0xFF


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's label-set fingerprint (prometheus/common model.LabelSet.Fingerprint):
    64-bit FNV-1a over the labels sorted by name, each name and value followed by 0xff.

    Older Alertmanagers do not send `fingerprint`; computing the same value keeps an
    alert's identity the same whichever version sent it."""
    h = _FNV64_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ _SEPARATOR) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertRole(StrEnum):
    ISOLATING = "isolating"  # tenant label + isolate="true": trips the tenant's breaker
    PLATFORM = "platform"  # scope="platform": P0 incident, no isolation
    TENANT = "tenant"  # tenant label only: recorded and linked to the tenant's incident
    OTHER = "other"  # none of the above: recorded only


def role_of(labels: Mapping[str, str], *, tenant_label: str) -> AlertRole:
    if labels.get("scope") == "platform":
        return AlertRole.PLATFORM
    if labels.get(tenant_label):
        if labels.get("isolate") == "true":
            return AlertRole.ISOLATING
        return AlertRole.TENANT
    return AlertRole.OTHER


@dataclass(frozen=True)
class AlertInstance:
    fingerprint: str
    starts_at: datetime
    ends_at: datetime | None
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    generator_url: str
    role: AlertRole
    tenant_id: str | None = field(default=None)

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.fingerprint, self.starts_at)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def runbook_url(self) -> str | None:
        return self.annotations.get("runbook_url") or None


def collapse_copies(alerts: Iterable[AlertInstance]) -> list[AlertInstance]:
    """One entry per instance, sorted by identity.

    A payload can carry an instance twice (Alertmanager never does, tools might); resolved
    wins, because it is the later state of the same instance. Sorting gives every
    transaction the same lock order, so concurrent copies of a delivery cannot deadlock."""
    by_key: dict[tuple[str, datetime], AlertInstance] = {}
    for alert in alerts:
        seen = by_key.get(alert.key)
        if seen is None or alert.status is AlertStatus.RESOLVED:
            by_key[alert.key] = alert
    return [by_key[k] for k in sorted(by_key)]
