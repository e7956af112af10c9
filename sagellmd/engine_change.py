"""Verdicts of a generation: of its change to each engine, as the store keeps them, and whole.

The store writes these records (store/change_log.py) and the rollout judge reads them
(reconcile/rollout.py); both speak this vocabulary, so it sits below both.
"""

from __future__ import annotations

from dataclasses import dataclass

# The verdict of one engine change: still coming up, came up, failed, or started nothing.
PENDING, HEALTHY, FAILED, NONE = "pending", "healthy", "failed", "none"
VERDICTS = (PENDING, HEALTHY, FAILED, NONE)

# A generation as a whole: judged healthy or failed, overtaken by a later one before it was
# judged (superseded), or still coming up.
GENERATION_HEALTHY, GENERATION_FAILED = "healthy", "failed"
SUPERSEDED, ROLLING_OUT = "superseded", "rolling out"
GENERATION_STATES = (GENERATION_HEALTHY, GENERATION_FAILED, SUPERSEDED, ROLLING_OUT)


@dataclass(frozen=True)
class EngineChange:
    """What one generation did to one engine (store/change_log.py keeps these)."""

    id: int
    generation: int
    engine_id: str
    after_hash: str | None  # None: the change removed the engine
    verdict: str  # pending, healthy, failed, or none (nothing to start)
    reason: str = ""
    superseded_by: int | None = None

    @property
    def open(self) -> bool:
        """Still waiting for its own verdict, and not overtaken by a later change."""
        return self.verdict == PENDING and self.superseded_by is None
