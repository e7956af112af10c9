"""Per-engine changes of each generation: judged and reverted one engine at a time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engine_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("engine_id", sa.String(128), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after_preset", sa.String(63), nullable=True),
        sa.Column("after_hash", sa.String(32), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
    )
    op.create_index("ix_engine_changes_generation", "engine_changes", ["generation"])
    op.create_index("ix_engine_changes_open", "engine_changes", ["engine_id", "superseded_by"])
    op.create_table(
        "preset_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
    )
    op.create_index("ix_preset_changes_generation", "preset_changes", ["generation"])
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("reverts", sa.Integer(), nullable=True))
    # Generations made by an older version have no per-engine record to judge them by.
    op.execute(
        "UPDATE generations SET verdict = 'not judged: made before per-engine verdicts'"
        " WHERE healthy IS NULL AND verdict IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("reverts")
    op.drop_table("preset_changes")
    op.drop_table("engine_changes")
