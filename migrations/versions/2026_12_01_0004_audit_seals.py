"""Audit seals: a SHA-256 chain over the audit log (DESIGN.md "Tamper evidence").

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_seals",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("sealed_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("previous_digest", sa.Text(), nullable=True),
        sa.Column(
            "gaps",
            postgresql.ARRAY(sa.BigInteger()),
            server_default=sa.text("'{}'::bigint[]"),
            nullable=False,
        ),
        sa.Column("row_hashes", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("first_id <= last_id", name=op.f("ck_audit_seals_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_seals")),
        sa.UniqueConstraint("first_id", name=op.f("uq_audit_seals_first_id")),
    )
    # Seals are append-only like the rows they seal.
    op.execute(
        """
        CREATE FUNCTION audit_seals_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_seals is append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_seals_no_update_delete BEFORE UPDATE OR DELETE ON audit_seals "
        "FOR EACH ROW EXECUTE FUNCTION audit_seals_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_seals_append_only()"
    )


def downgrade() -> None:
    op.drop_table("audit_seals")
    op.execute("DROP FUNCTION audit_seals_append_only()")
