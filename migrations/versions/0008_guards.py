"""Sending that cannot run away: the suppression list (numbers that opted out), and on each outbox row the
recipient as a number (digits only, what the list and the caps key on) and the purpose of a message the
receiver queued itself (an auto-reply, the opt-out confirmation, the HELP answer).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("recipient", sa.String(255)))
        batch.add_column(sa.Column("purpose", sa.String(32)))
    op.create_index("ix_outbox_recipient_created", "outbox", ["recipient", "created_at"])
    op.create_index("ix_outbox_state_status_sent", "outbox", ["state", "status", "sent_at"])
    op.create_table(
        "suppressions",
        sa.Column("recipient", sa.String(255), primary_key=True),
        sa.Column("number", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("event_id", sa.BigInteger()),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_outbox_state_status_sent", "outbox")
    op.drop_index("ix_outbox_recipient_created", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("purpose")
        batch.drop_column("recipient")
