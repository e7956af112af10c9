"""GPU reservations: the GPUs and per-GPU bytes reserved for each instance.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("gpus", sa.String(256), nullable=False, server_default=""))
        batch.add_column(sa.Column("gpu_bytes", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("gpu_bytes")
        batch.drop_column("gpus")
