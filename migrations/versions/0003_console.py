"""What the console filters and counts by: events' channel, api_key and application_id, the per-minute
traffic table, and message indexes for search by client_ref or phone number.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("channel", sa.String(32)))
        batch.add_column(sa.Column("api_key", sa.String(64)))
        batch.add_column(sa.Column("application_id", sa.String(64)))
    op.create_index("ix_messages_client_ref", "messages", ["client_ref"])
    op.create_index("ix_messages_to_number", "messages", ["to_number"])
    op.create_index("ix_messages_from_number", "messages", ["from_number"])
    op.create_table(
        "traffic",
        sa.Column("minute", sa.BigInteger(), primary_key=True),
        sa.Column("process", sa.String(255), primary_key=True),
        sa.Column("api_key", sa.String(64), primary_key=True),
        sa.Column("application_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Double(), nullable=False),
        sa.Column("latency", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("traffic")
    for name in ("ix_messages_from_number", "ix_messages_to_number", "ix_messages_client_ref"):
        op.drop_index(name, table_name="messages")
    with op.batch_alter_table("events") as batch:
        for column in ("application_id", "api_key", "channel"):
            batch.drop_column(column)
