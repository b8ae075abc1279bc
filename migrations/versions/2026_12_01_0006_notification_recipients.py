"""Notification rows per audience: e-mail recipients' states, threading, throttling.

Revision ID: 0006
Revises: 0005

(Numbered 0007 on its branch: the lead renumbers it when merging beside 0004-0006.)

- `audience`: '' for PagerDuty and Slack; for e-mail 'operators' or 'tenant:<id>': each
  audience is its own message and its own row, delivered in order per
  (incident, channel, audience).
- `recipients`: for e-mail, [{address, state, reply}] with state accepted, pending or
  refused: a retry goes only to the pending ones.
- `message_key`, `thread_key`: the random left part of the e-mail's Message-ID, and that
  of the first e-mail of the same (incident, audience), which follow-ups refer to.
- `throttled`: how many of the attempts the provider answered 429 (they do not count
  against RECEIVER_NOTIFY_MAX_ATTEMPTS).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "notifications", sa.Column("audience", sa.Text(), server_default="", nullable=False)
    )
    op.add_column("notifications", sa.Column("recipients", postgresql.JSONB(), nullable=True))
    op.add_column("notifications", sa.Column("message_key", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("thread_key", sa.Text(), nullable=True))
    op.add_column(
        "notifications", sa.Column("throttled", sa.Integer(), server_default="0", nullable=False)
    )
    # The worker's "oldest pending row of its (incident, channel, audience)" check.
    op.create_index(
        "ix_notifications_pending_order",
        "notifications",
        ["incident_id", "channel", "audience", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    # The e-mail thread of an (incident, audience): its first row.
    op.create_index(
        "ix_notifications_thread",
        "notifications",
        ["incident_id", "channel", "audience", "id"],
        postgresql_where=sa.text("thread_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_thread", table_name="notifications")
    op.drop_index("ix_notifications_pending_order", table_name="notifications")
    for column in ("throttled", "thread_key", "message_key", "recipients", "audience"):
        op.drop_column("notifications", column)
