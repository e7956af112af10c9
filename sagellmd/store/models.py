"""SQLAlchemy table models; they never leave the store package."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ActivePresetRow(Base):
    """A preset that is part of the desired state, with the document it was set from."""

    __tablename__ = "active_presets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    set_at: Mapped[float] = mapped_column(Float)


class DesiredEngineRow(Base):
    """One engine the user wants running: ad-hoc or part of an active preset."""

    __tablename__ = "desired_engines"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    preset: Mapped[str | None] = mapped_column(
        String(63), ForeignKey("active_presets.name", ondelete="CASCADE"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(32))
    restart_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class GenerationRow(Base):
    """An immutable snapshot of the whole desired set, made by every change."""

    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    cause: Mapped[str] = mapped_column(Text)
    snapshot: Mapped[str] = mapped_column(Text)
    healthy: Mapped[bool | None] = mapped_column(nullable=True)
    auto_rollback: Mapped[bool] = mapped_column(default=True)
    verdict: Mapped[str | None] = mapped_column(Text, nullable=True)
    reverts: Mapped[int | None] = mapped_column(Integer, nullable=True)


class InstanceRow(Base):
    """The observed process slot of one engine: at most one row per engine."""

    __tablename__ = "instances"

    engine_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    spec_hash: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    stop_intent: Mapped[str | None] = mapped_column(String(16), nullable=True)
    gpus: Mapped[str] = mapped_column(String(256), default="")
    gpu_bytes: Mapped[int] = mapped_column(Integer, default=0)
    retiring: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Comma-separated KV side-channel ports of a disaggregated engine's instance (0007).
    side_ports: Mapped[str] = mapped_column(String(256), default="")
    # The cluster node the process runs on, "" for the daemon's own machine (0008).
    node: Mapped[str] = mapped_column(String(128), default="")
    # An engine spanning nodes: JSON [[node, [gpu, ...]], ...], leader first (0008).
    spans: Mapped[str] = mapped_column(Text, default="[]")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    create_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_exit_signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ready_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    exited_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """Something the daemon did or saw, for `sagellm events` and `status --watch`."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_engine", "engine"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    engine: Mapped[str | None] = mapped_column(String(128), nullable=True)
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # JSON: the whole text behind a shortened message (migration 0006).
    details: Mapped[str | None] = mapped_column(Text, nullable=True)


class EngineChangeRow(Base):
    """What one generation did to one engine, so that change alone can be judged and undone."""

    __tablename__ = "engine_changes"
    __table_args__ = (
        Index("ix_engine_changes_generation", "generation"),
        Index("ix_engine_changes_open", "engine_id", "superseded_by"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation: Mapped[int] = mapped_column(Integer)
    engine_id: Mapped[str] = mapped_column(String(128))
    # {"preset": ..., "spec": {...}} of the engine before this change; None: it was absent.
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    after_preset: Mapped[str | None] = mapped_column(String(63), nullable=True)
    after_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: removed
    # pending (a new process must become ready), healthy, failed, or none (nothing to start).
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    superseded_by: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PresetChangeRow(Base):
    """What one generation did to one active preset's document, for undoing that change."""

    __tablename__ = "preset_changes"
    __table_args__ = (Index("ix_preset_changes_generation", "generation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(63))
    # {"document": {...}, "source": ...} before this change; None: the preset was not active.
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    superseded_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
