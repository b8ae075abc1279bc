"""The tables. Names and the columns listed in DESIGN.md "Tables" are public: SQL users
and dashboards read them, so add columns beside them and never rename."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
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
    delivery_id: Mapped[int] = mapped_column(
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


class Notification(Base):
    """Transactional outbox: written in the transaction that caused the event, delivered
    after commit by the worker (receiver/channels/worker.py), one row per channel."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
        Index(
            "ix_notifications_due", "next_attempt_at", postgresql_where=text("status = 'pending'")
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
