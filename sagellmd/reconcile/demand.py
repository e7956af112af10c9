"""The gateway's last activity report as the planner reads it: demand and idleness. Pure."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagellmd.instance import Instance


@dataclass(frozen=True)
class EngineLoad:
    """One engine's counts in the last report."""

    inflight: int = 0
    queued: int = 0
    last_request_at: float | None = None

    @property
    def busy(self) -> bool:
        return self.inflight + self.queued > 0


@dataclass(frozen=True)
class Activity:
    """A fresh report: requests held per engine with no ready replica, and each load."""

    demand: Mapping[str, int] = field(default_factory=dict)
    engines: Mapping[str, EngineLoad] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Activity:
        engines = {
            engine_id: EngineLoad(
                int(counts.get("inflight") or 0),
                int(counts.get("queued") or 0),
                counts.get("last_request_at"),
            )
            for engine_id, counts in (report.get("engines") or {}).items()
        }
        demand = {
            engine_id: int(waiting)
            for engine_id, waiting in (report.get("demand") or {}).items()
            if int(waiting) > 0
        }
        return cls(demand, engines)

    def load(self, engine_id: str) -> EngineLoad:
        """An engine the report does not name has had nothing in flight or queued."""
        return self.engines.get(engine_id) or EngineLoad()

    def waiting(self, engine_id: str) -> int:
        return self.demand.get(engine_id, 0)


def last_used(instance: Instance, load: EngineLoad) -> float:
    """When it last served a request, or became ready (an engine nobody has asked yet)."""
    times = [t for t in (load.last_request_at, instance.ready_at) if t is not None]
    return max(times) if times else 0.0


def clock_time(at: float) -> str:
    """`14:02:11`: the local time of day messages say `since`."""
    return time.strftime("%H:%M:%S", time.localtime(at))
