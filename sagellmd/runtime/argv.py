"""Argv and environment of an engine process, as its runtime kind builds them."""

from __future__ import annotations

from sagellmd.config import Settings
from sagellmd.runtime.kinds import kind_for
from sagellmd.runtime.kinds.base import ENGINE_HOST, GpuAssignment
from sagellmd.spec import EngineSpec

__all__ = ["ENGINE_HOST", "GpuAssignment", "build_argv", "build_env"]


def build_argv(
    spec: EngineSpec,
    settings: Settings,
    engine_id: str,
    port: int,
    assignment: GpuAssignment | None = None,
) -> list[str]:
    """The runtime's command (placeholders filled), its kind's flags, then extra_args.

    A model found on disk is passed as its path, so engines start without the hub.
    """
    return kind_for(spec.runtime).argv(spec, settings, engine_id, port, assignment)


def build_env(
    spec: EngineSpec,
    settings: Settings,
    engine_id: str,
    port: int,
    assignment: GpuAssignment | None = None,
) -> dict[str, str]:
    """The daemon's environment, the spec's env, and the markers that identify the engine."""
    return kind_for(spec.runtime).env(spec, settings, engine_id, port, assignment)
