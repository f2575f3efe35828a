"""A rejection row counts the requests refused for one reason, from one address, to one path, in one
second: a flood of forgeries is a few rows a second, written together, never a durable write a request.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rejections") as batch:
        batch.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("rejections") as batch:
        batch.drop_column("count")
