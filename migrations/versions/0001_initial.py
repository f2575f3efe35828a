"""The tables as receiver/db.py defined them when migrations began (what metadata.create_all made).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dedup_key", sa.String(512), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(255)),
        sa.Column("status", sa.String(64)),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("last_delivery_at", sa.Double(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", sa.Double(), nullable=False),
        sa.Column("lease_until", sa.Double()),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("processed_at", sa.Double()),
        sa.Column("last_error", sa.Text()),
        sa.Column("note", sa.Text()),
        sa.UniqueConstraint("kind", "dedup_key", name="uq_events_kind_dedup_key"),
    )
    op.create_index("ix_events_state_available_at", "events", ["state", "available_at"])
    op.create_index("ix_events_message_id", "events", ["message_id"])

    op.create_table(
        "messages",
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32)),
        sa.Column("status", sa.String(64)),
        sa.Column("status_rank", sa.Integer(), nullable=False),
        sa.Column("status_timestamp", sa.String(64)),
        sa.Column("to_number", sa.String(255)),
        sa.Column("from_number", sa.String(255)),
        sa.Column("client_ref", sa.String(255)),
        sa.Column("message_type", sa.String(64)),
        sa.Column("text", sa.Text()),
        sa.Column("content", sa.Text()),
        sa.Column("incomplete", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_messages_direction_created", "messages", ["direction", "created_at"])

    op.create_table(
        "message_history",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("timestamp", sa.String(64)),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("recorded_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("message_id", "event_id", name="uq_history_message_event"),
    )

    op.create_table(
        "sms_parts",
        sa.Column("group_key", sa.String(512), primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text()),
        sa.Column("message_id", sa.String(255)),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("dispatched_by", sa.BigInteger()),
    )

    op.create_table(
        "sms_groups",
        sa.Column("group_key", sa.String(512), primary_key=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.Double(), nullable=False),
        sa.Column("completed_by", sa.BigInteger()),
        sa.Column("incomplete", sa.Boolean(), nullable=False),
    )

    op.create_table(
        "rejections",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("remote_addr", sa.String(255)),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text()),
    )

    op.create_table(
        "workers",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("seen_at", sa.Double(), nullable=False),
        sa.Column("processed", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in ("workers", "rejections", "sms_groups", "sms_parts", "message_history", "messages", "events"):
        op.drop_table(table)  # drops the table's indexes with it
