"""The truth from Alertmanager (DESIGN.md): reconciler state, the heartbeat's row,
reconciled alerts without a delivery, and instance identity at millisecond precision.

Alertmanager's API v2 writes startsAt to the millisecond, its webhook to the nanosecond:
the receiver now stores starts_at truncated to whole milliseconds on both paths, so one
instance is one row whichever path saw it first. Rows stored before are truncated here
(with their incident links), except the (never seen) pairs of instances of one
fingerprint that would then collide; they keep their microseconds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.alter_column("alerts", "delivery_id", existing_type=sa.BigInteger(), nullable=True)
    op.create_table(
        "reconciler_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("last_poll_at", TS, nullable=True),
        sa.Column("last_complete_at", TS, nullable=True),
        sa.Column(
            "last_failed",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("last_changes", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_fired", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_resolved", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_reconciler_state_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciler_state")),
    )
    op.create_table(
        "reconcile_absent",
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("absent_since", TS, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "starts_at", name=op.f("pk_reconcile_absent")),
    )
    op.create_table(
        "heartbeat_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("first_started_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("last_heartbeat_at", TS, nullable=True),
        sa.Column("lost_at", TS, nullable=True),
        sa.Column("incident_id", sa.Text(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_heartbeat_state_one_row")),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_heartbeat_state_incident_id_incidents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heartbeat_state")),
    )
    _truncate_stored_starts_at()


def _truncate_stored_starts_at() -> None:
    op.drop_constraint("fk_incident_alerts_alerts", "incident_alerts", type_="foreignkey")
    op.execute(
        """
        CREATE TEMPORARY TABLE ms_moves ON COMMIT DROP AS
        SELECT a.fingerprint, a.starts_at AS old, date_trunc('milliseconds', a.starts_at) AS new
        FROM alerts a
        WHERE a.starts_at <> date_trunc('milliseconds', a.starts_at)
          AND NOT EXISTS (
              SELECT 1 FROM alerts b
              WHERE b.fingerprint = a.fingerprint AND b.starts_at <> a.starts_at
                AND date_trunc('milliseconds', b.starts_at)
                    = date_trunc('milliseconds', a.starts_at)
          )
        """
    )
    op.execute(
        "UPDATE alerts a SET starts_at = m.new FROM ms_moves m"
        " WHERE a.fingerprint = m.fingerprint AND a.starts_at = m.old"
    )
    op.execute(
        "UPDATE incident_alerts i SET starts_at = m.new FROM ms_moves m"
        " WHERE i.fingerprint = m.fingerprint AND i.starts_at = m.old"
    )
    op.create_foreign_key(
        "fk_incident_alerts_alerts",
        "incident_alerts",
        "alerts",
        ["fingerprint", "starts_at"],
        ["fingerprint", "starts_at"],
        ondelete="RESTRICT",
    )


def downgrade() -> None:
    # Truncated timestamps stay truncated (the microseconds are gone), and delivery_id
    # stays nullable: reconciled alerts have no delivery, and deleting them would lose
    # the record.
    op.drop_table("heartbeat_state")
    op.drop_table("reconcile_absent")
    op.drop_table("reconciler_state")
