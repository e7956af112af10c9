"""Instances: the KV side-channel ports of a prefill or decode instance (disaggregation).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("side_ports", sa.String(256), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("side_ports")
