"""The gateway's last activity report (in-flight and queued per engine, totals), kept in memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# A gateway reports at least every few seconds while busy; older counts describe nobody now.
FRESH_FOR_S = 10.0


@dataclass
class GatewayActivity:
    """The last report and when it came; `version` counts reports (status cache key),
    `load_version` the reports that changed an engine's in-flight or queued count."""

    clock: Callable[[], float] = time.time
    fresh_for_s: float = FRESH_FOR_S
    report: Mapping[str, Any] | None = None
    received_at: float | None = None
    version: int = 0
    load_version: int = 0

    def receive(self, report: Mapping[str, Any]) -> bool:
        """Keeps the report; True when it changed the load some engine shows."""
        before = self.load()
        self.report = report
        self.received_at = self.clock()
        self.version += 1
        if self.load() == before:
            return False
        self.load_version += 1
        return True

    def fresh(self) -> Mapping[str, Any] | None:
        """The last report if it is recent enough to describe the load now."""
        if self.report is None or self.received_at is None:
            return None
        if self.clock() - self.received_at > self.fresh_for_s:
            return None
        return self.report

    def load(self) -> Mapping[str, dict[str, int]] | None:
        """engine id -> {"inflight", "queued"} from a fresh report, else None."""
        report = self.fresh()
        if report is None:
            return None
        engines = report.get("engines") or {}
        return {
            engine_id: {
                "inflight": int(counts.get("inflight", 0)),
                "queued": int(counts.get("queued", 0)),
            }
            for engine_id, counts in engines.items()
        }

    @property
    def totals(self) -> Mapping[str, Any] | None:
        return None if self.report is None else self.report.get("totals")
