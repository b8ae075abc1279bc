"""Incident lifecycle, identifiers, correlation, cost impact and action items.

Pure functions over plain values: the service layer loads rows, asks these functions what
to do, and writes the result together with its audit rows in one transaction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from receiver.domain.tiers import Priority, Tier


class IncidentStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class IncidentError(ValueError):
    """A request the incident's state or the given input can never satisfy (HTTP 4xx)."""


class AlreadyResolved(IncidentError):
    pass


class AlreadyAcknowledged(IncidentError):
    pass


def require_aware(name: str, value: datetime) -> None:
    """Reject naive datetimes: mixing them with timestamptz values shifts times silently."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


# --- identifiers -----------------------------------------------------------------------

MAX_DAILY_SEQ = 9999

# [0-9] rather than \d: \d also matches non-ASCII digits (Arabic-Indic and others).
_INCIDENT_ID = re.compile(r"INC-([0-9]{4})([0-9]{2})([0-9]{2})-([0-9]{4})")


def format_incident_id(day: date, seq: int) -> str:
    """'INC-YYYYMMDD-NNNN', NNNN being the incident's number within its (UTC) day."""
    if not 1 <= seq <= MAX_DAILY_SEQ:
        raise ValueError(f"incident sequence must be 1..{MAX_DAILY_SEQ}, got {seq}")
    # Not strftime('%Y'): it does not zero-pad years below 1000 on every platform.
    return f"INC-{day.year:04d}{day.month:02d}{day.day:02d}-{seq:04d}"


def parse_incident_id(s: str) -> tuple[date, int] | None:
    """The (day, seq) an identifier encodes, or None if it is not one we could have made."""
    # fullmatch: re's `$` would also accept a trailing newline.
    m = _INCIDENT_ID.fullmatch(s)
    if m is None:
        return None
    year, month, day, seq = (int(g) for g in m.groups())
    if seq < 1:
        return None
    try:
        return date(year, month, day), seq
    except ValueError:
        return None


# --- correlation and lifecycle ---------------------------------------------------------


def joins_open_incident(
    *,
    incident_opened_at: datetime,
    incident_status: IncidentStatus,
    now: datetime,
    window: timedelta,
) -> bool:
    """Whether a newly failing tenant joins this incident rather than opening a new one.

    It joins an unresolved incident opened less than `window` ago; exactly `window` ago is
    too late. An incident that appears to open after `now` (replica clocks a little apart)
    is treated as just opened.
    """
    require_aware("incident_opened_at", incident_opened_at)
    require_aware("now", now)
    if incident_status is IncidentStatus.RESOLVED or window <= timedelta(0):
        return False
    return now - incident_opened_at < window


def acknowledge(status: IncidentStatus) -> IncidentStatus:
    if status is IncidentStatus.OPEN:
        return IncidentStatus.ACKNOWLEDGED
    if status is IncidentStatus.ACKNOWLEDGED:
        raise AlreadyAcknowledged("incident is already acknowledged")
    raise AlreadyResolved("incident is already resolved")


def resolve(status: IncidentStatus) -> IncidentStatus:
    # Resolving straight from open is allowed: an incident can recover before anyone acks.
    if status is IncidentStatus.RESOLVED:
        raise AlreadyResolved("incident is already resolved")
    return IncidentStatus.RESOLVED


def should_auto_resolve(
    *,
    status: IncidentStatus,
    breaker_states_closed: Sequence[bool],
    platform_alert_firing: bool,
) -> bool:
    """Whether the system may resolve the incident on its own.

    One bool per affected tenant: whether its breaker counts as closed (closed or
    forced_closed). A platform-only incident has none, so it resolves when its platform
    alert stops firing.
    """
    if status is IncidentStatus.RESOLVED or platform_alert_firing:
        return False
    return all(breaker_states_closed)


# --- the incident as stored, and its response SLA ------------------------------------


def sla_breached(
    *,
    ack_due_at: datetime,
    acknowledged_at: datetime | None,
    resolved_at: datetime | None,
    now: datetime,
) -> bool:
    """The first response (acknowledgement, else resolution, else none yet) came after
    the due time. The same rule as the `incident_summary` view's `sla_breached`."""
    first_response = acknowledged_at or resolved_at or now
    return first_response > ack_due_at


@dataclass(frozen=True)
class IncidentRecord:
    id: str
    title: str
    priority: Priority
    status: IncidentStatus
    opened_at: datetime
    ack_due_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    sla_breached_at: datetime | None
    tenants: tuple[str, ...] = ()

    def sla_breached(self, now: datetime) -> bool:
        return sla_breached(
            ack_due_at=self.ack_due_at,
            acknowledged_at=self.acknowledged_at,
            resolved_at=self.resolved_at,
            now=now,
        )

    def with_tenants(self, tenants: Iterable[str]) -> IncidentRecord:
        return replace(self, tenants=tuple(tenants))


# --- isolation and cost ----------------------------------------------------------------


@dataclass(frozen=True)
class IsolationSpan:
    """A period during which one tenant's breaker kept its traffic out; `end` None = still."""

    tenant_id: str
    tier: Tier | None
    hourly_cost: float | None
    start: datetime
    end: datetime | None

    def __post_init__(self) -> None:
        require_aware("start", self.start)
        if self.end is not None:
            require_aware("end", self.end)
            if self.end < self.start:
                raise ValueError(f"isolation of {self.tenant_id} ends before it starts")
        if self.hourly_cost is not None and not (
            math.isfinite(self.hourly_cost) and self.hourly_cost >= 0
        ):
            raise ValueError(f"hourly_cost of {self.tenant_id} must be a finite number >= 0")


def _interval(span: IsolationSpan, now: datetime) -> tuple[datetime, datetime]:
    # An open span runs until now; max() keeps a span that starts after `now` (clock skew
    # between replicas) at zero length instead of negative.
    end = span.end if span.end is not None else now
    return span.start, max(span.start, end)


def _merged_duration(intervals: Iterable[tuple[datetime, datetime]]) -> timedelta:
    # Overlapping spans of one tenant (tripped, half-open, tripped again while an older
    # row is still open) must not count the same hour twice.
    ordered = sorted(intervals)
    if not ordered:
        return timedelta(0)
    total = timedelta(0)
    cur_start, cur_end = ordered[0]
    for start, end in ordered[1:]:
        if start > cur_end:
            total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    return total + (cur_end - cur_start)


def isolated_hours(spans: Sequence[IsolationSpan], *, now: datetime) -> dict[str, float]:
    """Hours each tenant spent isolated, overlapping spans merged, open spans ending now."""
    require_aware("now", now)
    by_tenant: dict[str, list[tuple[datetime, datetime]]] = {}
    for span in spans:
        by_tenant.setdefault(span.tenant_id, []).append(_interval(span, now))
    return {t: _merged_duration(ivs).total_seconds() / 3600.0 for t, ivs in by_tenant.items()}


@dataclass(frozen=True)
class CostImpact:
    """`contained`: what isolating the tenants cost; `uncontained`: what the whole platform
    down for the incident's isolated duration (`hours`) would have cost."""

    contained: float
    uncontained: float
    hours: float


def cost_impact(
    *, spans: Sequence[IsolationSpan], platform_hourly_cost: float, now: datetime
) -> CostImpact:
    """Cost of the isolation actually done versus the platform-wide outage it prevented.

    `platform_hourly_cost` is the sum of every tenant's hourly cost, not only the affected
    ones. A tenant without a configured cost counts as 0. A tenant whose cost changed
    during the incident is priced at the highest cost its spans carry, so the result does
    not depend on the order of the spans.
    """
    require_aware("now", now)
    if not (math.isfinite(platform_hourly_cost) and platform_hourly_cost >= 0):
        raise ValueError("platform_hourly_cost must be a finite number >= 0")
    if not spans:
        return CostImpact(contained=0.0, uncontained=0.0, hours=0.0)

    hours_by_tenant = isolated_hours(spans, now=now)
    cost_by_tenant: dict[str, float] = {}
    for span in spans:
        cost = span.hourly_cost or 0.0
        cost_by_tenant[span.tenant_id] = max(cost, cost_by_tenant.get(span.tenant_id, 0.0))
    contained = sum(cost_by_tenant[t] * h for t, h in hours_by_tenant.items())

    intervals = [_interval(s, now) for s in spans]
    first_start = min(start for start, _ in intervals)
    last_end = max(end for _, end in intervals)
    hours = (last_end - first_start).total_seconds() / 3600.0
    return CostImpact(contained=contained, uncontained=platform_hourly_cost * hours, hours=hours)


# --- action items ----------------------------------------------------------------------

MAX_ACTION_ITEMS = 50
MAX_DESCRIPTION_CHARS = 500
MAX_OWNER_TEAM_CHARS = 100
MAX_STATUS_CHARS = 40

# Strict YYYY-MM-DD: date.fromisoformat() in 3.11 also takes '20261124' and '2026-W48-1'.
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class ActionItem:
    description: str
    owner_team: str
    due: date
    status: str = "open"


def _required_text(item: Mapping[str, object], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        raise IncidentError(f"{where}.{key} is required")
    if not isinstance(value, str):
        raise IncidentError(f"{where}.{key} must be a string")
    text = value.strip()
    if not text:
        raise IncidentError(f"{where}.{key} must not be empty")
    return text


def _due_date(item: Mapping[str, object], where: str) -> date:
    value = item.get("due")
    if value is None:
        raise IncidentError(f"{where}.due is required (an ISO date, YYYY-MM-DD)")
    # datetime is a date subclass, but a due time of day is not what anyone asked for.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise IncidentError(f"{where}.due must be an ISO date (YYYY-MM-DD), got {value!r}")


def _validate_action_item(raw: object, index: int) -> ActionItem:
    where = f"action_items[{index}]"
    if not isinstance(raw, Mapping):
        raise IncidentError(f"{where} must be an object")

    description = _required_text(raw, "description", where)
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise IncidentError(
            f"{where}.description is {len(description)} characters long; "
            f"the limit is {MAX_DESCRIPTION_CHARS}"
        )

    owner_team = _required_text(raw, "owner_team", where)
    # Blameless: a team owns the follow-up, never a person. Any '@' covers e-mail
    # addresses and chat handles alike ('@alice', 'alice@example.com').
    if "@" in owner_team:
        raise IncidentError(
            f"{where}.owner_team must name a team, not a person "
            f"(no e-mail addresses or @handles), got {owner_team!r}"
        )
    if len(owner_team) > MAX_OWNER_TEAM_CHARS:
        raise IncidentError(f"{where}.owner_team is longer than {MAX_OWNER_TEAM_CHARS} characters")

    due = _due_date(raw, where)

    status = "open"
    if raw.get("status") is not None:
        status = _required_text(raw, "status", where)
        if len(status) > MAX_STATUS_CHARS:
            raise IncidentError(f"{where}.status is longer than {MAX_STATUS_CHARS} characters")

    return ActionItem(description=description, owner_team=owner_team, due=due, status=status)


def validate_action_items(items: Sequence[Mapping[str, object]]) -> list[ActionItem]:
    """Action items from a request body, or IncidentError naming the first bad field.

    Text is stripped of surrounding whitespace; a missing status is "open".
    """
    # A str is a Sequence too; an item list that is a string is a malformed body.
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise IncidentError("action_items must be a list")
    if len(items) > MAX_ACTION_ITEMS:
        raise IncidentError(f"too many action items: {len(items)}; the limit is {MAX_ACTION_ITEMS}")
    return [_validate_action_item(raw, i) for i, raw in enumerate(items)]
