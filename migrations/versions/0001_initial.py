"""Initial schema: active presets, desired engines, generations, instances, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "active_presets",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("set_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "desired_engines",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column(
            "preset",
            sa.String(63),
            sa.ForeignKey("active_presets.name", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(32), nullable=False),
        sa.Column("restart_requested_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "generations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=True),
    )
    op.create_table(
        "instances",
        sa.Column("engine_id", sa.String(128), primary_key=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("spec_hash", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("stop_intent", sa.String(16), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("create_time", sa.Float(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_exit_code", sa.Integer(), nullable=True),
        sa.Column("last_exit_signal", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("ready_at", sa.Float(), nullable=True),
        sa.Column("exited_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("engine", sa.String(128), nullable=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=True),
    )
    op.create_index("ix_events_engine", "events", ["engine"])


def downgrade() -> None:
    op.drop_index("ix_events_engine", "events")
    for table in ("events", "instances", "generations", "desired_engines", "active_presets"):
        op.drop_table(table)
