"""A row per console session: logging out deletes it, and a session ends server-side when it is too old
or idle, or when ADMIN_TOKEN changes. It follows 0008 (the sending guards).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("token_mark", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("seen_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("operator_sessions")
