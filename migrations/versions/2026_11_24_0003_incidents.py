"""Incidents: incidents, their tenants and alerts, postmortems, action items, SQL views.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

# Views for the people who audit (README, "Audit queries"). They are part of the public
# SQL surface: add columns at the end, never rename.
INCIDENT_SUMMARY = """
CREATE VIEW incident_summary AS
SELECT
    i.id,
    i.title,
    i.priority,
    i.status,
    i.opened_at,
    i.ack_due_at,
    i.acknowledged_at,
    i.acknowledged_by,
    i.resolved_at,
    i.resolved_by,
    i.sla_breached_at,
    -- Breached: the first response (acknowledgement, else resolution, else nothing yet)
    -- came after ack_due_at.
    COALESCE(i.acknowledged_at, i.resolved_at, now()) > i.ack_due_at AS sla_breached,
    fa.first_alert_at,
    i.opened_at - fa.first_alert_at AS time_to_detect,
    i.acknowledged_at - i.opened_at AS time_to_acknowledge,
    i.resolved_at - i.opened_at AS time_to_resolve,
    EXTRACT(EPOCH FROM i.acknowledged_at - i.opened_at)::double precision
        AS seconds_to_acknowledge,
    EXTRACT(EPOCH FROM i.resolved_at - i.opened_at)::double precision AS seconds_to_resolve,
    t.tenant_count,
    t.tenants,
    COALESCE(p.false_positive, false) AS false_positive
FROM incidents i
CROSS JOIN LATERAL (
    SELECT count(*)::integer AS tenant_count,
           COALESCE(array_agg(it.tenant_id ORDER BY it.joined_at, it.tenant_id),
                    '{}'::text[]) AS tenants
    FROM incident_tenants it
    WHERE it.incident_id = i.id
) t
CROSS JOIN LATERAL (
    SELECT min(ia.starts_at) AS first_alert_at
    FROM incident_alerts ia
    WHERE ia.incident_id = i.id
) fa
LEFT JOIN postmortems p ON p.incident_id = i.id
"""

# Everything that happened to a tenant: its own audit rows (alerts, breaker, incident
# membership), plus the incident-wide rows (opened, escalated, acknowledged, resolved,
# SLA breached, postmortem) of every incident it was part of.
TENANT_HISTORY = """
CREATE VIEW tenant_history AS
SELECT a.tenant_id, a.id, a.occurred_at, a.actor, a.action, a.incident_id,
       a.delivery_id, a.details
FROM audit_log a
WHERE a.tenant_id IS NOT NULL
UNION ALL
SELECT it.tenant_id, a.id, a.occurred_at, a.actor, a.action, a.incident_id,
       a.delivery_id, a.details
FROM audit_log a
JOIN incident_tenants it ON it.incident_id = a.incident_id
WHERE a.tenant_id IS NULL
"""


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("priority", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("ack_due_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.Column("sla_breached_at", TS, nullable=True),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("id ~ '^INC-[0-9]{8}-[0-9]{4}$'", name=op.f("ck_incidents_id_format")),
        sa.CheckConstraint("priority IN ('P0', 'P1', 'P2')", name=op.f("ck_incidents_priority")),
        sa.CheckConstraint(
            "status IN ('open', 'acknowledged', 'resolved')", name=op.f("ck_incidents_status")
        ),
        sa.CheckConstraint(
            "(status = 'resolved') = (resolved_at IS NOT NULL)",
            name=op.f("ck_incidents_resolved_at"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_index("ix_incidents_opened_at", "incidents", ["opened_at"])
    op.create_index(
        "ix_incidents_unresolved",
        "incidents",
        ["opened_at"],
        postgresql_where=sa.text("status <> 'resolved'"),
    )
    op.create_table(
        "incident_counters",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_incident_counters")),
    )
    op.create_table(
        "incident_tenants",
        sa.Column("incident_id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("joined_at", TS, nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "cause IN ('tripped', 'suppressed')", name=op.f("ck_incident_tenants_cause")
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_tenants_incident_id_incidents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_incident_tenants_tenant_id_tenants"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("incident_id", "tenant_id", name=op.f("pk_incident_tenants")),
    )
    op.create_index("ix_incident_tenants_tenant_id", "incident_tenants", ["tenant_id"])
    op.create_table(
        "incident_alerts",
        sa.Column("incident_id", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("linked_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["fingerprint", "starts_at"],
            ["alerts.fingerprint", "alerts.starts_at"],
            name="fk_incident_alerts_alerts",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_alerts_incident_id_incidents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint(
            "incident_id", "fingerprint", "starts_at", name=op.f("pk_incident_alerts")
        ),
    )
    op.create_index(
        "ix_incident_alerts_fingerprint_starts_at",
        "incident_alerts",
        ["fingerprint", "starts_at"],
    )
    op.create_table(
        "postmortems",
        sa.Column("incident_id", sa.Text(), nullable=False),
        sa.Column("root_cause", sa.Text(), nullable=True),
        sa.Column(
            "five_whys", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column(
            "what_went_well",
            postgresql.JSONB(),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("false_positive", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_postmortems_incident_id_incidents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("incident_id", name=op.f("pk_postmortems")),
    )
    op.create_table(
        "action_items",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("incident_id", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner_team", sa.Text(), nullable=False),
        sa.Column("due", sa.Date(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_action_items_incident_id_incidents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_items")),
    )
    op.create_index(
        "ix_action_items_incident_id", "action_items", ["incident_id", "position"], unique=True
    )
    op.create_index("ix_action_items_owner_team_due", "action_items", ["owner_team", "due"])
    op.execute(INCIDENT_SUMMARY)
    op.execute(TENANT_HISTORY)


def downgrade() -> None:
    op.execute("DROP VIEW tenant_history")
    op.execute("DROP VIEW incident_summary")
    op.drop_table("action_items")
    op.drop_table("postmortems")
    op.drop_table("incident_alerts")
    op.drop_table("incident_tenants")
    op.drop_table("incident_counters")
    op.drop_table("incidents")
