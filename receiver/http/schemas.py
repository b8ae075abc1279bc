"""Wire formats (pydantic). Unknown fields are ignored: newer Alertmanagers add some."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from receiver.domain.alerts import AlertInstance, AlertStatus, fingerprint, role_of

# Alertmanager writes Go's zero time for "no end": 0001-01-01T00:00:00Z.
_GO_ZERO_YEAR = 1
# PostgreSQL's integer, the column truncatedAlerts is stored in.
_INT4_MAX = 2**31 - 1


def _utc_representable(value: datetime) -> datetime:
    # An instant whose UTC date falls outside years 1..9999 (0001-01-01T00:00:00+14:00)
    # parses, but can never be stored or compared: refuse it here (422) instead of failing
    # in the transaction with a 500 that Alertmanager would retry forever.
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range once converted to UTC") from exc
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_utc_representable)]

TenantId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"),
]


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
    def _drop_nul(cls, data: Any) -> Any:
        # PostgreSQL text and jsonb cannot hold U+0000. Failing in the database would
        # answer 500 and Alertmanager would retry the delivery forever; a 4xx would lose
        # it. The character is dropped instead.
        return _without_nul(data)

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
        tenant_id=labels.get(tenant_label) or None,
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
    hourly_cost: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] | None = None
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
