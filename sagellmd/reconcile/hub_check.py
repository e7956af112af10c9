"""A start's check that the hub it would download its model from answers."""

from __future__ import annotations

from dataclasses import dataclass

from sagellmd.models.hub_reach import HubAnswer


@dataclass(frozen=True)
class HubCheck:
    """The hub an engine would download its model from, and its answer (None: awaited)."""

    endpoint: str
    answer: HubAnswer | None
