"""The outbox: messages this app sends through the Messages API, written before they go on the wire.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.BigInteger()),
        sa.Column("position", sa.Integer()),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("to_number", sa.String(255), nullable=False),
        sa.Column("from_number", sa.String(255), nullable=False),
        sa.Column("client_ref", sa.String(100), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", sa.Double(), nullable=False),
        sa.Column("lease_until", sa.Double()),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("message_uuid", sa.String(255)),
        sa.Column("last_error", sa.Text()),
        sa.Column("problem", sa.Text()),
        sa.Column("status", sa.String(64)),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("sent_at", sa.Double()),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("event_id", "position", name="uq_outbox_event_position"),
    )
    op.create_index("ix_outbox_state_available_at", "outbox", ["state", "available_at"])
    op.create_index("ix_outbox_message_uuid", "outbox", ["message_uuid"])
    op.create_index("ix_outbox_client_ref", "outbox", ["client_ref"])


def downgrade() -> None:
    op.drop_table("outbox")
