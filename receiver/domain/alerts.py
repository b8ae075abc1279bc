"""Alert instances as the receiver understands them, independent of the wire format.

An instance's identity is (fingerprint, starts_at): Alertmanager resends an instance on
every retry, HA peer and repeat interval, and a new firing of the same labels gets a new
startsAt. Roles come from labels (DESIGN.md "Alert roles").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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


# An instance that starts further than this ahead of the database's clock is not believed
# (a clock gone wrong, a tool replaying with year 9999): it is audited and has no effect.
# Stored, it would be every later real firing's "newer instance" and make them stale.
MAX_AHEAD = timedelta(hours=1)


def starts_too_far_ahead(alert: AlertInstance, *, now: datetime) -> bool:
    return alert.starts_at > now + MAX_AHEAD


# A tenant id is the tenant label's value, whatever it is, as long as it can be stored,
# indexed and put in a URL path: at most this many bytes of UTF-8 and no control character.
MAX_TENANT_ID_BYTES = 512


# C0 and C1 control characters and DEL.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def tenant_id_problem(value: str) -> str | None:
    """Why `value` cannot be a tenant id; None when it can (DESIGN.md: "Any tenant id the
    webhook accepts, the API serves")."""
    if not value:
        return "empty"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8 (a lone surrogate)"
    if size > MAX_TENANT_ID_BYTES:
        return f"{size} bytes of UTF-8, over the limit of {MAX_TENANT_ID_BYTES}"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


def tenant_of(labels: Mapping[str, str], *, tenant_label: str) -> str | None:
    """The alert's tenant: its tenant label's value when usable, else None (an unusable
    value is recorded with the labels and audited, and has no breaker effect)."""
    value = labels.get(tenant_label)
    return value if value and tenant_id_problem(value) is None else None


def role_of(labels: Mapping[str, str], *, tenant_label: str) -> AlertRole:
    if labels.get("scope") == "platform":
        return AlertRole.PLATFORM
    if tenant_of(labels, tenant_label=tenant_label):
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
    # Why the tenant label's value is not a usable tenant id (tenant_id_problem), when it
    # is not: the alert is recorded and audited with it, and has no breaker effect.
    tenant_problem: str | None = field(default=None)

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


def independent_rounds(deliveries: Sequence[Sequence[AlertInstance]]) -> list[list[int]]:
    """Deliveries written together (group commit), by index, in rounds written one after
    the other, so that within a round no two deliveries can change each other's outcome
    and each can be written as if it were alone: each goes one round after the last
    earlier delivery that shares an alert fingerprint (the stale check, the upsert and
    superseding work per fingerprint) or a tenant (breakers, incidents) with it. A
    delivery with an alert of no tenant (platform alerts, the heartbeat: they act on
    incidents of any tenant) is a round of its own between the earlier and the later
    ones."""
    last: dict[tuple[bool, str], int] = {}
    earliest = 0
    out: list[list[int]] = []
    for i, instances in enumerate(deliveries):
        keys = {(True, a.fingerprint) for a in instances}
        keys |= {(False, a.tenant_id) for a in instances if a.tenant_id}
        alone = any(a.tenant_id is None or a.role is AlertRole.PLATFORM for a in instances)
        at = max((last[k] + 1 for k in keys if k in last), default=earliest)
        at = max(at, len(out) if alone else earliest)
        if at == len(out):
            out.append([])
        out[at].append(i)
        last.update(dict.fromkeys(keys, at))
        if alone:
            earliest = at + 1
    return out
