"""Rollouts: whether a generation may be rolled back automatically, and its verdict.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(
            sa.Column("auto_rollback", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("verdict", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("verdict")
        batch.drop_column("auto_rollback")
