"""Instances: the cluster node an engine process runs on ("" for the daemon's own machine),
and the nodes and GPUs of an engine that spans nodes (JSON).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("node", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("spans", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("spans")
        batch.drop_column("node")
