"""Who hears about an incident, and what they are told.

Pure: routing from priority to channels, the message every channel renders from, its JSON
form (stored in the notification outbox row as jsonb) and the wording the channels share.
No I/O, no clock: every time comes in on the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from receiver.domain.tiers import Priority, Tier

#: Name the channels use as the source of every notification.
SOURCE = "blast-radius-receiver"

#: Version of the JSON form written by `IncidentMessage.to_json`.
MESSAGE_SCHEMA_VERSION = 1


class Channel(StrEnum):
    PAGERDUTY = "pagerduty"
    SLACK = "slack"
    EMAIL = "email"


class NotificationEvent(StrEnum):
    OPENED = "incident.opened"
    ESCALATED = "incident.escalated"
    ACKNOWLEDGED = "incident.acknowledged"
    RESOLVED = "incident.resolved"
    SLA_BREACHED = "sla.breached"


_ROUTES: Mapping[Priority, frozenset[Channel]] = {
    Priority.P0: frozenset({Channel.PAGERDUTY, Channel.SLACK, Channel.EMAIL}),
    Priority.P1: frozenset({Channel.PAGERDUTY, Channel.SLACK}),
    Priority.P2: frozenset({Channel.SLACK, Channel.EMAIL}),
}


def channels_for(priority: Priority, event: NotificationEvent) -> frozenset[Channel]:
    """The channels that hear about `event` of an incident at `priority`.

    `priority` is the highest priority the incident has reached (priorities never
    de-escalate), so one rule serves every event: an incident is paged when its
    priority routes to PagerDuty, and only a paged incident gets PagerDuty's
    acknowledge and resolve. A P2 never pages.
    """
    # Every event follows the priority's route; `event` is part of the signature so that
    # a per-event rule can be added without touching the callers.
    NotificationEvent(event)
    return _ROUTES[Priority(priority)]


@dataclass(frozen=True)
class TenantSummary:
    tenant_id: str
    tier: Tier | None
    name: str | None
    breaker_state: str
    admin_email: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "tier": None if self.tier is None else self.tier.value,
            "name": self.name,
            "breaker_state": self.breaker_state,
            "admin_email": self.admin_email,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> TenantSummary:
        tier = _opt_str(d, "tier")
        return cls(
            tenant_id=_str(d, "tenant_id"),
            tier=None if tier is None else Tier(tier),
            name=_opt_str(d, "name"),
            breaker_state=_str(d, "breaker_state"),
            admin_email=_opt_str(d, "admin_email"),
        )


@dataclass(frozen=True)
class IncidentMessage:
    """Everything a channel needs to tell people about one incident event.

    `priority` is the incident's priority after the event (for an escalation, the new
    one; `previous_priority` is the old one). Datetimes must be timezone-aware.
    `occurred_at` (an addition to the agreed fields, optional) is when the event
    happened; without it channels use what the event implies (see `event_time`).
    """

    event: NotificationEvent
    incident_id: str
    title: str
    priority: Priority
    previous_priority: Priority | None
    status: str
    opened_at: datetime
    ack_due_at: datetime
    actor: str | None
    note: str | None
    tenants: tuple[TenantSummary, ...]
    runbook_urls: tuple[str, ...]
    incident_url: str | None
    occurred_at: datetime | None = None

    def __post_init__(self) -> None:
        # Accept lists from callers but keep the message hashable and comparable.
        object.__setattr__(self, "tenants", tuple(self.tenants))
        object.__setattr__(self, "runbook_urls", tuple(self.runbook_urls))
        for name in ("opened_at", "ack_due_at", "occurred_at"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"IncidentMessage.{name} must be timezone-aware")

    @property
    def event_time(self) -> datetime | None:
        """When the event happened: `occurred_at`, else what the event implies, else None."""
        if self.occurred_at is not None:
            return self.occurred_at
        if self.event is NotificationEvent.OPENED:
            return self.opened_at
        if self.event is NotificationEvent.SLA_BREACHED:
            return self.ack_due_at
        return None

    def to_json(self) -> dict[str, object]:
        """A JSON-compatible dict (strings, None, lists, dicts); see `from_json`."""
        return {
            "version": MESSAGE_SCHEMA_VERSION,
            "event": self.event.value,
            "incident_id": self.incident_id,
            "title": self.title,
            "priority": self.priority.value,
            "previous_priority": (
                None if self.previous_priority is None else self.previous_priority.value
            ),
            "status": self.status,
            "opened_at": self.opened_at.isoformat(),
            "ack_due_at": self.ack_due_at.isoformat(),
            "occurred_at": None if self.occurred_at is None else self.occurred_at.isoformat(),
            "actor": self.actor,
            "note": self.note,
            "tenants": [t.to_json() for t in self.tenants],
            "runbook_urls": list(self.runbook_urls),
            "incident_url": self.incident_url,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> IncidentMessage:
        """Inverse of `to_json`. Unknown keys are ignored; bad input raises ValueError."""
        version = d.get("version", MESSAGE_SCHEMA_VERSION)
        if version != MESSAGE_SCHEMA_VERSION:
            raise ValueError(f"unsupported notification message version {version!r}")
        previous = _opt_str(d, "previous_priority")
        occurred = _opt_str(d, "occurred_at")
        tenants = d.get("tenants", [])
        runbooks = d.get("runbook_urls", [])
        if not isinstance(tenants, list) or not all(isinstance(t, dict) for t in tenants):
            raise ValueError("'tenants' must be a list of objects")
        if not isinstance(runbooks, list) or not all(isinstance(u, str) for u in runbooks):
            raise ValueError("'runbook_urls' must be a list of strings")
        return cls(
            event=NotificationEvent(_str(d, "event")),
            incident_id=_str(d, "incident_id"),
            title=_str(d, "title"),
            priority=Priority(_str(d, "priority")),
            previous_priority=None if previous is None else Priority(previous),
            status=_str(d, "status"),
            opened_at=datetime.fromisoformat(_str(d, "opened_at")),
            ack_due_at=datetime.fromisoformat(_str(d, "ack_due_at")),
            occurred_at=None if occurred is None else datetime.fromisoformat(occurred),
            actor=_opt_str(d, "actor"),
            note=_opt_str(d, "note"),
            tenants=tuple(TenantSummary.from_json(t) for t in tenants),
            runbook_urls=tuple(runbooks),
            incident_url=_opt_str(d, "incident_url"),
        )


def _str(d: Mapping[str, object], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _opt_str(d: Mapping[str, object], key: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string or null, got {type(value).__name__}")
    return value


# --- wording shared by the channels -------------------------------------------------


_SEVERITY_WORDS = {
    Priority.P0: "critical",
    Priority.P1: "high",
    Priority.P2: "moderate",
}


def event_phrase(msg: IncidentMessage) -> str:
    """What happened, as a verb phrase: 'opened', 'escalated from P2 to P1', ..."""
    match msg.event:
        case NotificationEvent.OPENED:
            return "opened"
        case NotificationEvent.ESCALATED:
            if msg.previous_priority is None:
                return f"escalated to {msg.priority}"
            return f"escalated from {msg.previous_priority} to {msg.priority}"
        case NotificationEvent.ACKNOWLEDGED:
            return f"acknowledged by {msg.actor}" if msg.actor else "acknowledged"
        case NotificationEvent.RESOLVED:
            return f"resolved by {msg.actor}" if msg.actor else "resolved"
        case NotificationEvent.SLA_BREACHED:
            return "SLA breached"
    raise ValueError(f"unknown event {msg.event!r}")  # pragma: no cover


def headline(msg: IncidentMessage) -> str:
    """One line: '[P0] INC-20240501-0001 opened: <title>' (also the e-mail subject)."""
    title = " ".join(msg.title.split()) or "(no title)"
    # One line whatever the parts hold (an actor's name comes from an API caller).
    return " ".join(f"[{msg.priority}] {msg.incident_id} {event_phrase(msg)}: {title}".split())


def what_happened(msg: IncidentMessage) -> str:
    """A sentence or two for people reading the notification cold."""
    affected = affected_phrase(msg)
    due = format_time(msg.ack_due_at)
    severity = _SEVERITY_WORDS[msg.priority]
    match msg.event:
        case NotificationEvent.OPENED:
            return (
                f"Incident {msg.incident_id} was opened at {msg.priority} ({severity}): "
                f"{affected}. Acknowledge by {due}."
            )
        case NotificationEvent.ESCALATED:
            return (
                f"Incident {msg.incident_id} was {event_phrase(msg)} ({severity}): "
                f"{affected}. Acknowledge by {due}."
            )
        case NotificationEvent.ACKNOWLEDGED | NotificationEvent.RESOLVED:
            return (
                f"Incident {msg.incident_id} ({msg.priority}) was {event_phrase(msg)}: {affected}."
            )
        case NotificationEvent.SLA_BREACHED:
            return (
                f"Incident {msg.incident_id} ({msg.priority}) was not acknowledged "
                f"in time: acknowledgement was due {due}. {affected[0].upper()}{affected[1:]}."
            )
    raise ValueError(f"unknown event {msg.event!r}")  # pragma: no cover


def affected_phrase(msg: IncidentMessage) -> str:
    n = len(msg.tenants)
    if n == 0:
        return "platform-wide failure, no single tenant isolated"
    if n == 1:
        return f"tenant {msg.tenants[0].tenant_id} affected"
    return f"{n} tenants affected"


def tenant_line(t: TenantSummary) -> str:
    """'acme (Acme Corp): platinum tier, breaker open'."""
    who = t.tenant_id if not t.name or t.name == t.tenant_id else f"{t.tenant_id} ({t.name})"
    tier = f"{t.tier} tier" if t.tier is not None else "tier unknown"
    return f"{who}: {tier}, breaker {t.breaker_state}"


def format_time(dt: datetime) -> str:
    """'2024-05-01 12:15:00 UTC': unambiguous in any client."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def severity_word(priority: Priority) -> str:
    return _SEVERITY_WORDS[priority]


_TIER_ORDER = {Tier.PLATINUM: 0, Tier.GOLD: 1, Tier.SILVER: 2, Tier.BRONZE: 3}


def tenants_by_tier(tenants: Iterable[TenantSummary]) -> list[TenantSummary]:
    """Platinum first, then gold, silver, bronze and unknown tiers; stable within a tier."""
    return sorted(tenants, key=lambda t: _TIER_ORDER.get(t.tier, 4) if t.tier else 4)


def tier_counts(tenants: Iterable[TenantSummary]) -> dict[str, int]:
    """{'platinum': 2, 'unknown': 1}: how many tenants of each tier, most important first."""
    counts: dict[str, int] = {}
    for t in tenants_by_tier(tenants):
        key = "unknown" if t.tier is None else t.tier.value
        counts[key] = counts.get(key, 0) + 1
    return counts
