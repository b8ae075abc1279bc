"""Ingest and breakers: tenants, deliveries, alerts, the append-only audit log, breakers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("hourly_cost", sa.Numeric(14, 2), nullable=True),
        sa.Column("admin_email", sa.Text(), nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "tier IN ('platinum', 'gold', 'silver', 'bronze')", name=op.f("ck_tenants_tier")
        ),
        sa.CheckConstraint("hourly_cost >= 0", name=op.f("ck_tenants_hourly_cost")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("received_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("receiver", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("group_labels", postgresql.JSONB(), nullable=False),
        sa.Column("external_url", sa.Text(), nullable=False),
        sa.Column("alert_count", sa.Integer(), nullable=False),
        sa.Column("truncated_alerts", sa.Integer(), nullable=False),
        sa.Column("new_alerts", sa.Integer(), nullable=False),
        sa.Column("changed_alerts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_table(
        "alerts",
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=True),
        sa.Column("alertname", sa.Text(), nullable=False),
        sa.Column("labels", postgresql.JSONB(), nullable=False),
        sa.Column("annotations", postgresql.JSONB(), nullable=False),
        sa.Column("generator_url", sa.Text(), nullable=False),
        sa.Column("isolating", sa.Boolean(), nullable=False),
        sa.Column("platform", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("resolved_seen_at", TS, nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("status IN ('firing', 'resolved')", name=op.f("ck_alerts_status")),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_alerts_delivery_id_deliveries"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("fingerprint", "starts_at", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_tenant_id_status", "alerts", ["tenant_id", "status"])
    op.create_index(
        "ix_alerts_firing_isolating",
        "alerts",
        ["tenant_id"],
        postgresql_where=sa.text("status = 'firing' AND isolating"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("occurred_at", TS, server_default=sa.func.clock_timestamp(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=True),
        sa.Column("incident_id", sa.Text(), nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_tenant_id_occurred_at", "audit_log", ["tenant_id", "occurred_at"])
    op.create_index(
        "ix_audit_log_incident_id_occurred_at", "audit_log", ["incident_id", "occurred_at"]
    )
    op.create_index("ix_audit_log_action_occurred_at", "audit_log", ["action", "occurred_at"])
    # Append-only, enforced by the database so that no code path (nor a hurried operator
    # with psql) can rewrite history. session_replication_role=replica, a superuser's
    # switch, bypasses it for deliberate maintenance such as the test suite's clean-up.
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )
    op.create_table(
        "breakers",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default="closed", nullable=False),
        sa.Column("opened_at", TS, nullable=True),
        sa.Column("trips", sa.Integer(), server_default="0", nullable=False),
        sa.Column("streak", sa.Integer(), server_default="0", nullable=False),
        sa.Column("half_open_at", TS, nullable=True),
        sa.Column("probe_successes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("probe_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("alert_firing", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("changed_at", TS, nullable=True),
        sa.Column("next_check_at", TS, nullable=True),
        sa.Column("override_reason", sa.Text(), nullable=True),
        sa.Column("override_actor", sa.Text(), nullable=True),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "state IN ('closed', 'open', 'half_open', 'forced_open', 'forced_closed')",
            name=op.f("ck_breakers_state"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_breakers")),
    )
    op.create_index(
        "ix_breakers_state", "breakers", ["state"], postgresql_where=sa.text("state <> 'closed'")
    )
    op.create_index(op.f("ix_breakers_next_check_at"), "breakers", ["next_check_at"])


def downgrade() -> None:
    op.drop_table("breakers")
    op.drop_table("audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_table("alerts")
    op.drop_table("deliveries")
    op.drop_table("tenants")
