"""Probe outcomes as they arrive (DESIGN.md "What-if replay"): a replay cannot decide
half-open without them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
STATES = "('closed', 'open', 'half_open', 'forced_open', 'forced_closed')"


def upgrade() -> None:
    op.create_table(
        "probe_outcomes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("success", sa.Integer(), nullable=False),
        sa.Column("failure", sa.Integer(), nullable=False),
        sa.Column("state_before", sa.Text(), nullable=False),
        sa.Column("state_after", sa.Text(), nullable=False),
        sa.CheckConstraint("success >= 0 AND failure >= 0", name=op.f("ck_probe_outcomes_counts")),
        sa.CheckConstraint(
            f"state_before IN {STATES}", name=op.f("ck_probe_outcomes_state_before")
        ),
        sa.CheckConstraint(f"state_after IN {STATES}", name=op.f("ck_probe_outcomes_state_after")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_outcomes")),
    )
    op.create_index(
        "ix_probe_outcomes_received_at", "probe_outcomes", ["received_at"], unique=False
    )
    op.create_index(
        "ix_probe_outcomes_tenant_id_received_at",
        "probe_outcomes",
        ["tenant_id", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("probe_outcomes")
