"""Events: the whole text behind a shortened message (e.g. an engine's long last log line).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01

Numbered 0006 because another branch adds 0005 on top of 0004; once both are merged this
one's down_revision becomes "0005" (the columns do not depend on each other).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("details", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("details")
