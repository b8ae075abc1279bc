"""Wire formats (pydantic): the webhook payload (unknown fields are ignored: newer
Alertmanagers add some), the bodies operators send, and the API's answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from receiver.db import json
from receiver.domain.alerts import (
    AlertInstance,
    AlertStatus,
    fingerprint,
    role_of,
    tenant_id_problem,
    tenant_of,
)
from receiver.domain.analytics import IncidentAnalytics
from receiver.domain.incident import IncidentRecord
from receiver.domain.incident_detail import IncidentDetail, LinkedAlert
from receiver.domain.isolation import AuditEntry, Impact
from receiver.domain.links import postmortem_path, timeline_path
from receiver.domain.members import Member
from receiver.domain.postmortem import PostmortemFields
from receiver.domain.priority import tier_or_default
from receiver.domain.tenant import TenantHealth

MAY_HOLD_NUL = "may_hold_nul"  # validation context: False when no `\u0000` is in the body
_GO_ZERO_YEAR = 1  # Alertmanager writes Go's zero time for "no end": 0001-01-01T00:00:00Z
_INT4_MAX = 2**31 - 1  # PostgreSQL's integer, the column truncatedAlerts is stored in


def _utc_representable(value: datetime) -> datetime:
    # An instant whose UTC date falls outside years 1..9999 (0001-01-01T00:00:00+14:00)
    # parses, but can never be stored or compared: refuse it here (422) instead of failing
    # in the transaction with a 500 that Alertmanager would retry forever. Offsets are
    # under a day: only the first and last years can be out of range.
    try:
        if value.year in (1, 9999):
            value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range once converted to UTC") from exc
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_utc_representable)]


def _usable_tenant_id(value: str) -> str:
    problem = tenant_id_problem(value)
    if problem is not None:
        raise ValueError(f"not a usable tenant id: {problem}")
    return value


# Any value of the tenant label the webhook takes as a tenant (domain.alerts.tenant_of).
TenantId = Annotated[str, AfterValidator(_usable_tenant_id)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WebhookAlert(_Wire):
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Timestamp
    endsAt: Timestamp | None = None
    generatorURL: str = ""
    fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{1,16}$")


class WebhookPayload(_Wire):
    """Alertmanager webhook payload, version 4 (0.25 and earlier)."""

    version: Literal["4"]
    receiver: str = ""
    status: AlertStatus
    alerts: list[WebhookAlert]
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    groupKey: str = ""
    # Older Alertmanagers omit it; absent means nothing was truncated.
    truncatedAlerts: int = Field(default=0, ge=0, le=_INT4_MAX)

    @model_validator(mode="before")
    @classmethod
    def _drop_nul(cls, data: Any, info: ValidationInfo) -> Any:
        # PostgreSQL text and jsonb cannot hold U+0000. Failing in the database would
        # answer 500 and Alertmanager would retry the delivery forever; a 4xx would lose
        # it. The character is dropped instead. JSON carries it escaped only: a body
        # without `\u0000` (parse_model tells) needs no walk over every string.
        may_hold = info.context is None or info.context.get(MAY_HOLD_NUL, True)
        return _without_nul(data) if may_hold else data

    def instances(self, *, tenant_label: str) -> list[AlertInstance]:
        return [to_instance(a, tenant_label=tenant_label) for a in self.alerts]


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _end(value: datetime | None) -> datetime | None:
    if value is None or value.year == _GO_ZERO_YEAR:
        return None
    return value


def to_instance(alert: WebhookAlert, *, tenant_label: str) -> AlertInstance:
    fp = alert.fingerprint.zfill(16) if alert.fingerprint else fingerprint(alert.labels)
    labels = alert.labels
    return AlertInstance(
        fingerprint=fp,
        starts_at=alert.startsAt,
        # A firing alert carries a *planned* end (or Go's zero time); only a resolved
        # alert's endsAt is when it ended.
        ends_at=_end(alert.endsAt) if alert.status is AlertStatus.RESOLVED else None,
        status=alert.status,
        labels=labels,
        annotations=alert.annotations,
        generator_url=alert.generatorURL,
        role=role_of(labels, tenant_label=tenant_label),
        tenant_id=tenant_of(labels, tenant_label=tenant_label),
        tenant_problem=tenant_id_problem(value) if (value := labels.get(tenant_label)) else None,
    )


class WebhookSummary(_Wire):
    delivery_id: int
    alerts: int
    new: int
    changed: int
    duplicates: int
    truncated: int
    breaker_transitions: int = 0
    incidents: list[str] = Field(default_factory=list)


# --- breakers and tenants ----------------------------------------------------------------

MAX_HOURLY_COST = 999_999_999_999.99

Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class _Input(BaseModel):
    # Strict about what operators and gateways send: a typo'd field is an error, not a no-op.
    model_config = ConfigDict(extra="forbid", frozen=True)


class OverrideIn(_Input):
    action: Literal["force_open", "force_close", "release"]
    reason: Reason
    actor: Actor


class OutcomesIn(_Input):
    success: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 0
    failure: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 0


class TenantIn(_Input):
    tier: Literal["platinum", "gold", "silver", "bronze"]
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    # The column is numeric(14, 2): 1e12 itself (or anything that rounds to it) does not fit.
    hourly_cost: Annotated[float, Field(ge=0, le=MAX_HOURLY_COST, allow_inf_nan=False)] | None = (
        None
    )
    admin_email: (
        Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    actor: Actor = "api"


# --- incidents, postmortems, analytics -----------------------------------------------------

MAX_NOTE_CHARS = 2000


def _reject_nul(value: Any) -> Any:
    # PostgreSQL text and jsonb cannot hold U+0000; refuse it here (422) rather than fail
    # in the database. Unlike a webhook, a person can correct and resend.
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain the NUL character (U+0000)")
    elif isinstance(value, dict):
        for k, v in value.items():
            _reject_nul(k)
            _reject_nul(v)
    elif isinstance(value, list):
        for v in value:
            _reject_nul(v)
    return value


class _TextInput(_Input):
    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return _reject_nul(data)


Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NOTE_CHARS)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=10_000)]
ListItem = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class IncidentActionIn(_TextInput):
    """POST /v1/incidents/{id}/acknowledge and /resolve."""

    actor: Actor
    note: Note | None = None


class PostmortemIn(_TextInput):
    """PUT /v1/incidents/{id}/postmortem: replaces every field (absent ones are emptied).

    `action_items` is checked by the domain (receiver.domain.incident.validate_action_items),
    whose message names the first bad field: each needs description, owner_team (a team,
    never a person) and due (YYYY-MM-DD); status is optional ("open")."""

    actor: Actor
    root_cause: LongText | None = None
    five_whys: Annotated[list[ListItem], Field(max_length=10)] = Field(default_factory=list)
    action_items: list[Any] = Field(default_factory=list)
    what_went_well: Annotated[list[ListItem], Field(max_length=50)] = Field(default_factory=list)
    false_positive: Annotated[bool, Field(strict=True)] = False


class IncidentQuery(_Input):
    """GET /v1/incidents query string. since/until bound opened_at: [since, until)."""

    status: Literal["open", "acknowledged", "resolved"] | None = None
    priority: Literal["P0", "P1", "P2"] | None = None
    tenant: TenantId | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class AnalyticsQuery(_Input):
    """GET /v1/analytics/incidents query string (default: the last 30 days)."""

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


# --- responses: incidents, postmortems, tenants, analytics ---------------------------------
# Built from the services' domain values and written with model_dump(mode="json"). Times
# are written as isoformat() gives them (an offset, "+00:00" for UTC), as every other
# answer of the API does (receiver.db.json); fields keep the order of DESIGN.md.


def _isoformat(value: datetime) -> str:
    return value.isoformat()


Instant = Annotated[datetime, PlainSerializer(_isoformat, when_used="json")]


def _as_encoded(value: Any) -> Any:
    # A value built elsewhere as plain JSON data (the breaker view's answer): written as
    # the service's one encoder writes it, not as pydantic would.
    return json.loads(json.dumps_bytes(value))


Encoded = Annotated[Any, PlainSerializer(_as_encoded, when_used="json")]


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True)


class _IncidentFields(_Output):
    """The incident row as every incident answer starts (its tenants follow)."""

    id: str
    title: str
    priority: str
    status: str
    opened_at: Instant
    ack_due_at: Instant
    acknowledged_at: Instant | None
    acknowledged_by: str | None
    resolved_at: Instant | None
    resolved_by: str | None
    sla_breached: bool
    sla_breached_at: Instant | None


def _incident_fields(r: IncidentRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": r.id,
        "title": r.title,
        "priority": r.priority.value,
        "status": r.status.value,
        "opened_at": r.opened_at,
        "ack_due_at": r.ack_due_at,
        "acknowledged_at": r.acknowledged_at,
        "acknowledged_by": r.acknowledged_by,
        "resolved_at": r.resolved_at,
        "resolved_by": r.resolved_by,
        "sla_breached": r.sla_breached(now),
        "sla_breached_at": r.sla_breached_at,
    }


class IncidentOut(_IncidentFields):
    tenants: list[str]

    @classmethod
    def of(cls, r: IncidentRecord, *, now: datetime) -> IncidentOut:
        return cls(**_incident_fields(r, now), tenants=list(r.tenants))


class IncidentListOut(_Output):
    incidents: list[IncidentOut]


class SlaOut(_Output):
    ack_due_at: Instant
    response_seconds: float
    breached: bool
    breached_at: Instant | None


class MemberOut(_Output):
    tenant_id: str
    name: str | None
    tier: str | None
    sla_tier: str
    cause: str
    joined_at: Instant
    breaker_state: str
    hourly_cost: float | None
    isolated_hours: float
    cost: float

    @classmethod
    def of(cls, m: Member, impact: Impact) -> MemberOut:
        hours = impact.hours_of(m.tenant_id)
        return cls(
            tenant_id=m.tenant_id,
            name=m.name,
            tier=m.tier.value if m.tier else None,
            sla_tier=tier_or_default(m.tier).value,
            cause=m.cause,
            joined_at=m.joined_at,
            breaker_state=m.breaker_state.value,
            hourly_cost=m.hourly_cost,
            isolated_hours=hours,
            cost=m.cost(hours),
        )


class LinkedAlertOut(_Output):
    fingerprint: str
    starts_at: Instant
    ends_at: Instant | None
    status: str
    alertname: str
    tenant_id: str | None
    platform: bool
    isolating: bool
    labels: dict[str, Any]
    annotations: dict[str, Any]
    generator_url: str
    linked_at: Instant
    runbook_url: str | None

    @classmethod
    def of(cls, a: LinkedAlert) -> LinkedAlertOut:
        return cls(**a.__dict__, runbook_url=a.runbook_url)


class CostOut(_Output):
    contained: float
    uncontained: float
    hours: float
    platform_hourly_cost: float


class DurationsOut(_Output):
    first_alert_at: Instant | None
    time_to_detect_seconds: float | None
    time_to_acknowledge_seconds: float | None
    time_to_resolve_seconds: float | None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


class ActionItemOut(_Output):
    description: str
    owner_team: str
    due: date
    status: str


class PostmortemOut(_Output):
    root_cause: str | None
    five_whys: list[str]
    action_items: list[ActionItemOut]
    what_went_well: list[str]
    false_positive: bool
    updated_at: Instant
    updated_by: str

    @classmethod
    def of(cls, p: PostmortemFields) -> PostmortemOut:
        return cls(
            root_cause=p.root_cause,
            five_whys=p.five_whys,
            action_items=[ActionItemOut(**a.__dict__) for a in p.action_items],
            what_went_well=p.what_went_well,
            false_positive=p.false_positive,
            updated_at=p.updated_at,
            updated_by=p.updated_by,
        )


class IncidentLinksOut(_Output):
    timeline: str
    postmortem: str


class IncidentDetailOut(_IncidentFields):
    tenants: list[MemberOut]
    sla: SlaOut
    alerts: list[LinkedAlertOut]
    runbook_urls: list[str]
    cost: CostOut
    durations: DurationsOut
    postmortem: PostmortemOut | None
    links: IncidentLinksOut

    @classmethod
    def of(cls, d: IncidentDetail) -> IncidentDetailOut:
        rec, imp, first = d.record, d.impact, d.first_alert_at
        return cls(
            **_incident_fields(rec, d.now),
            tenants=[MemberOut.of(m, imp) for m in d.members],
            sla=SlaOut(
                ack_due_at=rec.ack_due_at,
                response_seconds=(rec.ack_due_at - rec.opened_at).total_seconds(),
                breached=rec.sla_breached(d.now),
                breached_at=rec.sla_breached_at,
            ),
            alerts=[LinkedAlertOut.of(a) for a in d.alerts],
            runbook_urls=d.runbook_urls,
            cost=CostOut(
                contained=imp.cost.contained,
                uncontained=imp.cost.uncontained,
                hours=imp.cost.hours,
                platform_hourly_cost=imp.platform_hourly_cost,
            ),
            durations=DurationsOut(
                first_alert_at=first,
                time_to_detect_seconds=_seconds(first, rec.opened_at),
                time_to_acknowledge_seconds=_seconds(rec.opened_at, rec.acknowledged_at),
                time_to_resolve_seconds=_seconds(rec.opened_at, rec.resolved_at),
            ),
            postmortem=PostmortemOut.of(d.postmortem) if d.postmortem else None,
            links=IncidentLinksOut(
                timeline=timeline_path(rec.id), postmortem=postmortem_path(rec.id)
            ),
        )


class TimelineRowOut(_Output):
    id: int
    occurred_at: Instant
    actor: str
    action: str
    tenant_id: str | None
    details: dict[str, Any]


class TimelineOut(_Output):
    incident_id: str
    timeline: list[TimelineRowOut]

    @classmethod
    def of(cls, incident_id: str, entries: Sequence[AuditEntry]) -> TimelineOut:
        return cls(
            incident_id=incident_id, timeline=[TimelineRowOut(**e.__dict__) for e in entries]
        )


class TenantOut(_Output):
    tenant_id: str
    tier: str | None
    name: str | None
    hourly_cost: float | None
    admin_email: str | None
    created_at: Instant
    updated_at: Instant


class RegistrationOut(_Output):
    tier: str | None
    name: str | None
    hourly_cost: float | None
    admin_email: str | None


class RecentAlertOut(_Output):
    fingerprint: str
    starts_at: Instant
    ends_at: Instant | None
    status: str
    alertname: str
    isolating: bool
    annotations: dict[str, Any]


class TenantHealthOut(_Output):
    tenant_id: str
    tenant: RegistrationOut | None
    breaker: Encoded
    open_incident: IncidentOut | None
    recent_alerts: list[RecentAlertOut]

    @classmethod
    def of(cls, h: TenantHealth, *, breaker: Any, now: datetime) -> TenantHealthOut:
        return cls(
            tenant_id=h.tenant_id,
            tenant=RegistrationOut(**h.tenant.__dict__) if h.tenant else None,
            breaker=breaker,
            open_incident=IncidentOut.of(h.open_incident, now=now) if h.open_incident else None,
            recent_alerts=[RecentAlertOut(**a.__dict__) for a in h.recent_alerts],
        )


class StatsOut(_Output):
    incidents: int
    mtta_seconds: float | None
    mttr_seconds: float | None
    sla_breaches: int
    false_positives: int


class AnalyticsOut(_Output):
    since: Instant
    until: Instant
    incidents: int
    mtta_seconds: float | None
    mttr_seconds: float | None
    counts_by_priority: dict[str, int]
    counts_by_status: dict[str, int]
    sla_breaches: int
    false_positives: int
    false_positive_rate: float | None
    by_priority: dict[str, StatsOut]
    breaker_trips_by_tenant: dict[str, int]
    breaker_trips: int

    @classmethod
    def of(cls, a: IncidentAnalytics) -> AnalyticsOut:
        t = a.total
        return cls(
            since=a.since,
            until=a.until,
            incidents=t.incidents,
            mtta_seconds=t.mtta_seconds,
            mttr_seconds=t.mttr_seconds,
            counts_by_priority={p: s.incidents for p, s in a.by_priority.items()},
            counts_by_status=a.by_status,
            sla_breaches=t.sla_breaches,
            false_positives=t.false_positives,
            false_positive_rate=a.false_positive_rate,
            by_priority={p: StatsOut(**s.__dict__) for p, s in a.by_priority.items()},
            breaker_trips_by_tenant=a.trips_by_tenant,
            breaker_trips=a.trips,
        )
