"""The tables. Names and the columns listed in DESIGN.md "Tables" are public: SQL users
and dashboards read them, so add columns beside them and never rename."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so migrations can refer to them (SQLAlchemy's naming convention doc).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TIERS = ("platinum", "gold", "silver", "bronze")
BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "forced_closed")
PRIORITIES = ("P0", "P1", "P2")
INCIDENT_STATUSES = ("open", "acknowledged", "resolved")
# How a tenant became part of an incident: its breaker tripped, or the mass-isolation guard
# suppressed the trip (the tenant is failing but was deliberately not isolated).
JOIN_CAUSES = ("tripped", "suppressed")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint(f"tier IN {TIERS!r}", name="tier"),
        CheckConstraint("hourly_cost >= 0", name="hourly_cost"),
    )

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    # NULL until an operator registers it: an unknown tier is handled as bronze.
    tier: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    hourly_cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    admin_email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Delivery(Base):
    """One accepted webhook POST: the unit Alertmanager retries."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    receiver: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    group_key: Mapped[str] = mapped_column(Text)
    group_labels: Mapped[dict[str, Any]]
    external_url: Mapped[str] = mapped_column(Text)
    alert_count: Mapped[int] = mapped_column(Integer)
    truncated_alerts: Mapped[int] = mapped_column(Integer)
    new_alerts: Mapped[int] = mapped_column(Integer)
    changed_alerts: Mapped[int] = mapped_column(Integer)


class Alert(Base):
    """One alert instance. Its identity is (fingerprint, starts_at): Alertmanager resends
    the same instance many times, and a new firing of the same labels has a new startsAt."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("status IN ('firing', 'resolved')", name="status"),
        Index("ix_alerts_tenant_id_status", "tenant_id", "status"),
        Index(
            "ix_alerts_firing_isolating",
            "tenant_id",
            postgresql_where=text("status = 'firing' AND isolating"),
        ),
    )

    fingerprint: Mapped[str] = mapped_column(Text, primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(primary_key=True)
    ends_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[str | None] = mapped_column(Text)
    alertname: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, Any]]
    annotations: Mapped[dict[str, Any]]
    generator_url: Mapped[str] = mapped_column(Text)
    isolating: Mapped[bool] = mapped_column(Boolean)
    platform: Mapped[bool] = mapped_column(Boolean)
    first_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    resolved_seen_at: Mapped[datetime | None]
    # NULL for an instance the reconciler recorded (no webhook ever carried it).
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("deliveries.id", ondelete="RESTRICT")
    )


class AuditLog(Base):
    """Append-only: a trigger (see the migration) rejects UPDATE, DELETE and TRUNCATE."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_tenant_id_occurred_at", "tenant_id", "occurred_at"),
        Index("ix_audit_log_incident_id_occurred_at", "incident_id", "occurred_at"),
        Index("ix_audit_log_action_occurred_at", "action", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # clock_timestamp, not now(): rows of one transaction keep their real order in time.
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


class AuditSeal(Base):
    """A SHA-256 over a run of audit rows, chained to the previous seal (domain/seal.py).
    Append-only like audit_log (a trigger, see the migration)."""

    __tablename__ = "audit_seals"
    __table_args__ = (
        CheckConstraint("first_id <= last_id", name="range"),
        UniqueConstraint("first_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sealed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    first_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(Text)
    previous_digest: Mapped[str | None] = mapped_column(Text)
    # Ids of the range that no committed row holds (rolled-back inserts).
    gaps: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), server_default=text("'{}'::bigint[]")
    )
    # 16 bytes per sealed row, in id order.
    row_hashes: Mapped[bytes] = mapped_column(LargeBinary)


class Breaker(Base):
    __tablename__ = "breakers"
    __table_args__ = (
        CheckConstraint(f"state IN {BREAKER_STATES!r}", name="state"),
        Index("ix_breakers_state", "state", postgresql_where=text("state <> 'closed'")),
    )

    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text, server_default="closed")
    opened_at: Mapped[datetime | None]
    trips: Mapped[int] = mapped_column(Integer, server_default="0")
    streak: Mapped[int] = mapped_column(Integer, server_default="0")
    half_open_at: Mapped[datetime | None]
    probe_successes: Mapped[int] = mapped_column(Integer, server_default="0")
    probe_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    alert_firing: Mapped[bool] = mapped_column(Boolean, server_default="false")
    resolved_at: Mapped[datetime | None]
    changed_at: Mapped[datetime | None]
    # When a time-driven change (open -> half_open, probation -> closed) falls due: the
    # sweeper's index. NULL when only an event can move the breaker.
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)
    override_reason: Mapped[str | None] = mapped_column(Text)
    override_actor: Mapped[str | None] = mapped_column(Text)
    # Bumped on every change: replicas keep the newest copy whatever order copies arrive in.
    version: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProbeOutcome(Base):
    """Probe results a gateway reported (POST /v1/tenants/{id}/outcomes), one row per
    report, written in the transaction that applied them, with the breaker's state when
    they arrived (its effective state: an elapsed open period is already half-open) and
    after. The what-if replay reads them: without them it could not decide half-open."""

    __tablename__ = "probe_outcomes"
    __table_args__ = (
        CheckConstraint("success >= 0 AND failure >= 0", name="counts"),
        CheckConstraint(f"state_before IN {BREAKER_STATES!r}", name="state_before"),
        CheckConstraint(f"state_after IN {BREAKER_STATES!r}", name="state_after"),
        Index("ix_probe_outcomes_received_at", "received_at"),
        Index("ix_probe_outcomes_tenant_id_received_at", "tenant_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    # The receiver's clock when the report was applied: the `now` of the decision.
    received_at: Mapped[datetime]
    success: Mapped[int] = mapped_column(Integer)
    failure: Mapped[int] = mapped_column(Integer)
    state_before: Mapped[str] = mapped_column(Text)
    state_after: Mapped[str] = mapped_column(Text)


class Notification(Base):
    """Transactional outbox: written in the transaction that caused the event, delivered
    after commit by the worker (receiver/channels/worker.py), one row per channel and, for
    e-mail, per audience (the operators, each tenant's admins)."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
        Index(
            "ix_notifications_due", "next_attempt_at", postgresql_where=text("status = 'pending'")
        ),
        Index(
            "ix_notifications_pending_order",
            "incident_id",
            "channel",
            "audience",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_notifications_thread",
            "incident_id",
            "channel",
            "audience",
            "id",
            postgresql_where=text("thread_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    incident_id: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text)
    message: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    provider_ref: Mapped[str | None] = mapped_column(Text)
    # '' for PagerDuty and Slack; e-mail: 'operators' or 'tenant:<id>', one row each.
    audience: Mapped[str] = mapped_column(Text, server_default="")
    # E-mail: [{address, state: accepted|pending|refused, reply}].
    recipients: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # E-mail: the Message-ID's random part, and that of the audience's first e-mail.
    message_key: Mapped[str | None] = mapped_column(Text)
    thread_key: Mapped[str | None] = mapped_column(Text)
    # Attempts the provider answered 429: not counted against RECEIVER_NOTIFY_MAX_ATTEMPTS.
    throttled: Mapped[int] = mapped_column(Integer, server_default="0")


class Incident(Base):
    """One failure event: tenants failing together (and/or a platform alert).

    `id` is 'INC-YYYYMMDD-NNNN' (UTC day, number within the day from incident_counters).
    Priority only ever escalates; `ack_due_at` only ever tightens."""

    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint("id ~ '^INC-[0-9]{8}-[0-9]{4}$'", name="id_format"),
        CheckConstraint(f"priority IN {PRIORITIES!r}", name="priority"),
        CheckConstraint(f"status IN {INCIDENT_STATUSES!r}", name="status"),
        CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL)", name="resolved_at"),
        Index("ix_incidents_opened_at", "opened_at"),
        Index(
            "ix_incidents_unresolved", "opened_at", postgresql_where=text("status <> 'resolved'")
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="open")
    opened_at: Mapped[datetime]
    ack_due_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(Text)
    # Set once by the SLA check when the incident passed ack_due_at unacknowledged.
    sla_breached_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class IncidentCounter(Base):
    """Last incident number handed out per UTC day: an upsert on this row serialises
    concurrent openings, so two replicas never make the same identifier."""

    __tablename__ = "incident_counters"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class IncidentTenant(Base):
    __tablename__ = "incident_tenants"
    __table_args__ = (
        CheckConstraint(f"cause IN {JOIN_CAUSES!r}", name="cause"),
        Index("ix_incident_tenants_tenant_id", "tenant_id"),
    )

    incident_id: Mapped[str] = mapped_column(
        Text, ForeignKey("incidents.id", ondelete="RESTRICT"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(
        Text, ForeignKey("tenants.tenant_id", ondelete="RESTRICT"), primary_key=True
    )
    joined_at: Mapped[datetime]
    cause: Mapped[str] = mapped_column(Text)


class IncidentAlert(Base):
    """Alert instances linked to an incident: the ones that opened or joined it, platform
    alerts, and tenant alerts (no isolate label) that fired while it was open."""

    __tablename__ = "incident_alerts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["fingerprint", "starts_at"],
            ["alerts.fingerprint", "alerts.starts_at"],
            name="fk_incident_alerts_alerts",
            ondelete="RESTRICT",
        ),
        Index("ix_incident_alerts_fingerprint_starts_at", "fingerprint", "starts_at"),
    )

    incident_id: Mapped[str] = mapped_column(
        Text, ForeignKey("incidents.id", ondelete="RESTRICT"), primary_key=True
    )
    fingerprint: Mapped[str] = mapped_column(Text, primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(primary_key=True)
    linked_at: Mapped[datetime]


class Postmortem(Base):
    """What people wrote about an incident; the Markdown is rendered from this, the
    incident and its audit rows. Action items are rows of their own (action_items)."""

    __tablename__ = "postmortems"

    incident_id: Mapped[str] = mapped_column(
        Text, ForeignKey("incidents.id", ondelete="RESTRICT"), primary_key=True
    )
    root_cause: Mapped[str | None] = mapped_column(Text)
    five_whys: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    what_went_well: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    false_positive: Mapped[bool] = mapped_column(Boolean, server_default="false")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_by: Mapped[str] = mapped_column(Text)


class ActionItemRow(Base):
    """A postmortem follow-up, owned by a team (never a person) with a due date."""

    __tablename__ = "action_items"
    __table_args__ = (
        Index("ix_action_items_incident_id", "incident_id", "position", unique=True),
        Index("ix_action_items_owner_team_due", "owner_team", "due"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    incident_id: Mapped[str] = mapped_column(Text, ForeignKey("incidents.id", ondelete="RESTRICT"))
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    owner_team: Mapped[str] = mapped_column(Text)
    due: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(Text, server_default="open")


class ReconcilerState(Base):
    """The reconciler's one row (DESIGN.md "The truth from Alertmanager"): who polls now
    (a lease, so one replica at a time), and what the last polls found."""

    __tablename__ = "reconciler_state"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None]
    last_poll_at: Mapped[datetime | None]
    last_complete_at: Mapped[datetime | None]
    # [{"peer", "reason"}] of the last poll (empty when every peer answered).
    last_failed: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    last_changes: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_fired: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_resolved: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ReconcileAbsent(Base):
    """Stored firing instances absent from the last complete poll: resolved if the next
    complete poll does not find them either, whichever replica runs it."""

    __tablename__ = "reconcile_absent"

    fingerprint: Mapped[str] = mapped_column(Text, primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(primary_key=True)
    absent_since: Mapped[datetime]


class HeartbeatState(Base):
    """The dead man's switch's one row: when the receiver first started on this database,
    the last heartbeat, and the open "pipeline silent" incident while it is lost."""

    __tablename__ = "heartbeat_state"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    first_started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_heartbeat_at: Mapped[datetime | None]
    lost_at: Mapped[datetime | None]
    incident_id: Mapped[str | None] = mapped_column(
        Text, ForeignKey("incidents.id", ondelete="RESTRICT")
    )
