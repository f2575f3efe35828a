"""Phone-number indexes that also order by created_at: the message page's conversation reads the newest
messages with one number, and a busy number has millions of them (with the number alone, SQLite read every
one and sorted them: 161 ms per page on a million messages of one number, against 3 ms with these).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

REPLACED = {"ix_messages_to_number": ("ix_messages_to_created", "to_number"),
            "ix_messages_from_number": ("ix_messages_from_created", "from_number")}


def upgrade() -> None:
    for old, (new, column) in REPLACED.items():
        op.create_index(new, "messages", [column, "created_at"])
        op.drop_index(old, table_name="messages")


def downgrade() -> None:
    for old, (new, column) in REPLACED.items():
        op.create_index(old, "messages", [column])
        op.drop_index(new, table_name="messages")
