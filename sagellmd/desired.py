"""One engine of the desired state, as the store returns it and the loop reads it."""

from __future__ import annotations

from dataclasses import dataclass

from sagellmd.spec import EngineSpec


@dataclass(frozen=True)
class DesiredEngine:
    """One engine of the desired state: its id, its preset, its spec and restart request."""

    id: str
    preset: str | None
    spec: EngineSpec
    restart_requested_at: float | None = None
    # Why the stored spec failed validation (a row an older version let in); `spec` is
    # then its repaired copy, so the engine keeps running and status can say so.
    invalid: str | None = None
