"""workers.progress_at: when each worker last finished an event, so readiness can tell a stalled backlog.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("progress_at", sa.Double()))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("progress_at")
