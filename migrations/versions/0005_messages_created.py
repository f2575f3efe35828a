"""An index on messages.created_at: the API's newest-first list of messages, on a table of millions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_created", "messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_created", table_name="messages")
